// The app: log in, hold one WebSocket session and wire it to the frame handlers (frames.js),
// the views (views.js, conversation.js) and the page's controls (controls.js).
import { ApiError, ERROR_TEXT, describe } from "./api.js";
import { Socket } from "./socket.js";
import { Outbox, isChange } from "./outbox.js";
import { Store } from "./store.js";
import { $, setText } from "./view/dom.js";
import { renderMessages } from "./view/thread.js";
import { showLogin, hideLogin } from "./view/login.js";
import { hidePanels } from "./view/panels.js";
import { renderLink } from "./view/composer.js";
import { Desktop, renderBadge } from "./notify.js";
import { activity, api, mentionBox, push, quietly, setDesktop, setSocket, setStore, socket, store } from "./state.js";
import { presenceAsked } from "./loading.js";
import { closeThread, openThread } from "./conversation.js";
import { onAck, onFrame, showPending } from "./frames.js";
import { bindStatic } from "./controls.js";
import { editing, refreshList, refreshRows, threadActions } from "./views.js";

const TOKEN_KEY = "chatd.token";

const wsUrl = () => `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/v1/ws`;

async function boot() {
  bindStatic();
  bindLogout();
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) await startSession(token);
  else showLogin(login, () => api.server());
}

/** @param {"login"|"register"} action @param {string} username @param {string} password
 * @param {string} invite (when the server needs one to register) */
async function login(action, username, password, invite) {
  if (action === "register") await api.register(username, password, invite);
  const result = await api.login(username, password);
  localStorage.setItem(TOKEN_KEY, result.token);
  await startSession(result.token);
  $("#direct-username").focus(); // the first thing to do; not the page body
}

/** @param {string} token */
async function startSession(token) {
  api.token = token;
  try {
    store.me = await api.me();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return endSession();
    throw err;
  }
  store.names.set(store.me.user_id, store.me.display_name || store.me.username);
  setDesktop(new Desktop(store, (cid) => quietly(openThread(cid))));
  push.register();
  if (push.supported && Notification.permission === "granted") quietly(push.subscribe());
  hideLogin();
  $("#main").hidden = false;
  setText($("#me"), store.me.username);
  $("#admin-button").hidden = !store.me.admin;
  // Unacknowledged sends, edits and deletes, kept in this browser until sent (outbox.js): a
  // closed tab's are taken over by another tab of this user, or by the next one opened.
  const outbox = new Outbox(store.me.user_id, (entries) => {
    showPending(entries);
    refreshList();
    if (store.openId !== null) renderMessages(store, store.convs.get(store.openId), threadActions);
    socket?.pump();
  });
  await outbox.open();
  setSocket(new Socket(wsUrl(), token, {
    since: () => Object.fromEntries([...store.convs.values()].map((c) => [String(c.id), c.last])),
    frame: onFrame,
    ack: (frame, entry) => (isChange(entry) ? editing.acked(frame, entry) : onAck(frame)),
    state: showLink,
    failed: (entry, error) => {
      if (isChange(entry)) return editing.failed(entry, error);
      const conv = store.convs.get(entry.conversation_id);
      const own = conv?.own.get(entry.client_msg_id);
      if (!own) return;
      own.state = "failed";
      own.error = ERROR_TEXT[error.code] || error.message;
      refreshRows(conv);
      refreshList();
    },
    waiting: (entry, error) => {
      // Stays pending, resent by the socket; say why it waits.
      if (isChange(entry)) return editing.waiting(entry, error);
      const conv = store.convs.get(entry.conversation_id);
      const own = conv?.own.get(entry.client_msg_id);
      if (!own || own.state !== "pending") return;
      own.error = ERROR_TEXT[error.code] || error.message;
      refreshRows(conv);
    },
    unauthorized: () => endSession(),
    idle: () => activity.idle,
  }, outbox));
  socket.start();
}

/** @param {import("./socket.js").LinkState} state @param {any} [detail] the refusal of a crowded connection */
function showLink(state, detail) {
  if (state === "online" && !store.presence.has(store.me.user_id)) {
    // Our own dot until the server reports a change of ours (version 0 is the oldest).
    store.setPresence({ user_id: store.me.user_id, status: activity.idle ? "away" : "online", version: 0, last_seen: null });
  }
  renderLink(state, detail);
}

function endSession() {
  socket?.stop();
  socket?.outbox.discard(); // pending sends are not kept past a logout (a shared computer)
  setSocket(null);
  presenceAsked.clear();
  localStorage.removeItem(TOKEN_KEY);
  api.token = null;
  setStore(new Store());
  setDesktop(null);
  renderBadge(store);
  editing.store = mentionBox.store = store;
  $("#main").hidden = true;
  $("#conversations").replaceChildren();
  hidePanels();
  closeThread();
  showLogin(login, () => api.server());
}

/** Log out: the server closes this token's sockets; this page forgets the session. */
function bindLogout() {
  $("#logout").addEventListener("click", async () => {
    await push.unsubscribe().catch((err) => console.warn("chatd: push", describe(err)));
    try {
      await api.logout(); // closes this token's sockets with 4001
    } catch (err) {
      // Logged out here all the same; the token stays valid until a logout reaches the server.
      console.warn("chatd: logout", describe(err));
    }
    endSession();
  });
}

boot();
