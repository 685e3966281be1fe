// The app: log in, hold one WebSocket session, keep the store current and the views in step.
import { Api, ApiError, ERROR_TEXT, describe } from "./api.js";
import { Socket } from "./socket.js";
import { Outbox, isChange } from "./outbox.js";
import { Store, TYPING_SHOWN_MS } from "./store.js";
import { Activity } from "./activity.js";
import { $, setAttr, setText, h } from "./view/dom.js";
import { renderList } from "./view/list.js";
import { renderHead, renderMembers, renderMessages, renderTyping, showReaders } from "./view/thread.js";
import { showLogin, hideLogin } from "./view/login.js";
import { bindAccount, openAccount } from "./view/account.js";
import { bindAdmin, openAdmin } from "./view/admin.js";
import { hidePanels, openPanel } from "./view/panels.js";
import { renderCount, renderLink, withinLimit } from "./view/composer.js";
import { Desktop, Push, renderBadge } from "./notify.js";
import { Attachments, bindAttachments } from "./view/attachments.js";
import { Editing, Mentions } from "./editing.js";
import { renderResults, closeResults } from "./view/search.js";

/** @typedef {import("./store.js").Conv} Conv @typedef {import("./store.js").ChatEvent} ChatEvent
 * @typedef {import("./outbox.js").OutboxEntry} OutboxEntry */

const TOKEN_KEY = "chatd.token";
const TYPING_EVERY_MS = 2000;
const PAGE = 50;
// Delivery receipts: one cumulative `received` per conversation per this interval (§4.8).
const RECEIVED_EVERY_MS = 100;

const api = new Api("");
/** @type {Store} */
let store = new Store();
/** @type {Socket|null} */
let socket = null;
const editing = new Editing(store, (entry) => socket?.send(entry), refreshRows);
const mentionBox = new Mentions(store);
const activity = new Activity((idle) => socket?.raw({ type: "presence", status: idle ? "idle" : "active" }));
let lastTyping = 0;
const push = new Push(api);
/** @type {Desktop|null} */
let desktop = null;
const attachments = new Attachments(() => api.token);

const wsUrl = () => `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/v1/ws`;

// -- session -------------------------------------------------------------------------------
async function boot() {
  bindStatic();
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
  desktop = new Desktop(store, (cid) => quietly(openThread(cid)));
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
  socket = new Socket(wsUrl(), token, {
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
  }, outbox);
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

/** Outbox entries as my pending sends, edits and deletes in their conversations (after
 * `ready`, or taken over). @param {Iterable<OutboxEntry>} entries */
function showPending(entries) {
  const all = [...entries];
  editing.show(all.filter(isChange));
  for (const entry of all.filter((e) => !isChange(e))) {
    const conv = store.convs.get(entry.conversation_id);
    if (conv && !conv.own.has(entry.client_msg_id)) {
      const { client_msg_id, body, attachments: files } = entry;
      const created_at = entry.created_at || new Date().toISOString();
      conv.own.set(client_msg_id, { client_msg_id, body, state: "pending", error: null, seq: null, created_at, attachments: files });
    }
  }
}

function endSession() {
  socket?.stop();
  socket?.outbox.discard(); // pending sends are not kept past a logout (a shared computer)
  socket = null;
  presenceAsked.clear();
  localStorage.removeItem(TOKEN_KEY);
  api.token = null;
  store = new Store();
  desktop = null;
  renderBadge(store);
  editing.store = mentionBox.store = store;
  $("#main").hidden = true;
  $("#conversations").replaceChildren();
  hidePanels();
  closeThread();
  showLogin(login, () => api.server());
}

// -- frames (docs/protocol.md §4.3) -----------------------------------------------------------
/** @param {any} frame */
function onFrame(frame) {
  switch (frame.type) {
    case "ready":
    case "conversations":
      return onReady(frame);
    case "message":
      return onMessage(frame);
    case "error":
      return onError(frame);
    case "conversation_added":
      return onAdded(frame.conversation);
    case "read_state":
      return onPointer(frame.conversation_id, frame.last_read_seq);
    case "read":
      return onRead(frame);
    case "delivered":
      return onDelivered(frame);
    case "receipts":
      return onReceipts(frame);
    case "presence":
      if (store.setPresence(frame)) refreshPresence();
      return;
    case "typing":
      return onTyping(frame);
    case "notify_settings":
      return onNotifySettings(frame);
  }
}

/** @type {Map<number, number>} my read pointers as they were before `ready` (§4.8 re-marks) */
let readsBefore = new Map();

/** `ready`, then its `conversations` pages (§4.1): acted on once the last page is in.
 * @param {any} frame */
function onReady(frame) {
  if (frame.type === "ready") readsBefore = new Map([...store.convs.values()].map((c) => [c.id, c.read]));
  const removed = store.ready(frame);
  if (frame.limits) store.maxChars = frame.limits.max_message_chars ?? null;
  if (frame.limits) store.editWindowS = frame.limits.edit_window_s ?? null;
  renderCount(store.maxChars);
  if (removed === null) return;
  quietly(loadNotify()); // what changed while this session was away (§12)
  const before = readsBefore;
  if (store.openId !== null && removed.includes(store.openId)) closeThread();
  showPending(socket.outbox.values());
  for (const conv of store.convs.values()) {
    // A mark that never got its reply: send it again (§4.8).
    const mine = before.get(conv.id) || 0;
    if (mine > conv.read) socket.raw({ type: "read", conversation_id: conv.id, seq: mine });
    if (conv.members === null) quietly(loadMembers(conv));
    if (!conv.lastEvent && conv.last > 0) quietly(loadPreview(conv));
  }
  refreshList();
  if (store.openId !== null) {
    const conv = store.convs.get(store.openId);
    renderHead(store, conv);
    renderMessages(store, conv, threadActions);
  } else if (history.state?.chatd === "thread" && store.convs.has(history.state.cid)) {
    quietly(openThread(history.state.cid, true)); // reloaded in a conversation: back in it
  } else if (/^#c\d+$/.test(location.hash) && store.convs.has(Number(location.hash.slice(2)))) {
    const cid = Number(location.hash.slice(2)); // a push notification opened this tab (sw.js)
    history.replaceState(null, "", location.pathname);
    quietly(openThread(cid));
  }
}

/** @type {Map<number, number>} conversation -> the highest seq received and not yet confirmed */
const unconfirmed = new Map();
let confirmTimer = 0;

/** This device got the conversation's events up to `seq`: confirm it, with the others that
 * arrive meanwhile, in one `received` per conversation (§4.8).
 * @param {number} cid @param {number} seq */
function confirmReceived(cid, seq) {
  if (seq <= (unconfirmed.get(cid) || 0)) return;
  unconfirmed.set(cid, seq);
  if (confirmTimer) return;
  confirmTimer = window.setTimeout(() => {
    confirmTimer = 0;
    for (const [id, upto] of unconfirmed) socket?.raw({ type: "received", conversation_id: id, seq: upto });
    unconfirmed.clear();
  }, RECEIVED_EVERY_MS);
}

/** @param {ChatEvent} event */
function onMessage(event) {
  if (event.sender_id !== store.me.user_id && event.kind === "text") confirmReceived(event.conversation_id, event.seq);
  if (!store.message(event)) return;
  const conv = store.convs.get(event.conversation_id);
  const removedMe = event.kind === "members_removed" && event.user_ids.includes(store.me.user_id);
  if (event.kind === "members_added" || event.kind === "members_removed") quietly(loadMembers(conv));
  if (event.sender_id !== store.me.user_id && !store.presence.has(event.sender_id)) {
    // Sending counts as taking part (§4.9): their presence may be visible from now on.
    quietly(lookupPresence(event.sender_id));
  }
  desktop?.message(event);
  if (event.sender_id !== store.me.user_id && event.kind === "text") {
    announce(`${store.name(event.sender_id)} in ${store.title(conv)}: ${event.body}`);
  }
  if (store.openId === conv.id) {
    const scroller = $("#scroller");
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
    renderMessages(store, conv, threadActions);
    renderTyping(store, conv);
    const newRow = event.kind !== "edit" && event.kind !== "delete";
    if (newRow && (atBottom || event.sender_id === store.me.user_id)) scroller.scrollTop = scroller.scrollHeight;
    markRead();
  }
  if (removedMe) {
    // The last frame of this conversation for us (§4.4).
    store.convs.delete(conv.id);
    if (store.openId === conv.id) closeThread();
  }
  refreshList();
}

/** My notification settings changed on some device (§12). @param {any} frame */
function onNotifySettings(frame) {
  store.setNotify(frame);
  renderAlerts();
  refreshList();
}

async function loadNotify() {
  store.setNotify(await api.call("GET", "/v1/me/notifications"));
  renderAlerts();
  refreshList();
}

function refreshList() {
  renderList(store, showThread);
  renderBadge(store);
}

function renderAlerts() {
  /** @type {HTMLInputElement} */ ($("#alerts-dnd")).checked = store.notify.dnd;
  /** @type {HTMLInputElement} */ ($("#alerts-preview")).checked = store.notify.push_preview;
  const permission = typeof Notification === "undefined" ? "unsupported" : Notification.permission;
  const text = {
    granted: "Notifications are on for this browser.",
    denied: "This browser blocks notifications from this site; allow them in its site settings.",
    default: "Notifications are off for this browser.",
    unsupported: "This browser cannot show notifications.",
  }[permission];
  setText($("#alerts-state"), text);
  $("#alerts-enable").hidden = permission !== "default";
  if (store.openId !== null) {
    const muted = store.notify.muted.has(store.openId);
    setAttr($("#mute-toggle"), "aria-pressed", String(muted));
    setText($("#mute-toggle"), muted ? "Muted" : "Mute");
  }
}

/** @param {any} ack */
function onAck(ack) {
  const conv = store.convs.get(ack.conversation_id);
  const own = conv?.own.get(ack.client_msg_id);
  if (!own) return;
  own.state = "saved";
  own.error = null;
  own.seq = ack.seq;
  refreshRows(conv);
  refreshList();
}

/** @param {any} frame */
function onError(frame) {
  if (frame.code !== "not_member" || !frame.conversation_id || frame.ref) return;
  store.convs.delete(frame.conversation_id); // a `since` entry refused: removed while away
  if (store.openId === frame.conversation_id) closeThread();
  refreshList();
}

/** @param {any} raw */
function onAdded(raw) {
  const known = store.convs.has(raw.id);
  const conv = store.upsert(raw);
  if (!known) conv.counted = raw.last_seq;
  quietly(loadMembers(conv));
  refreshList();
}

/** @param {number} cid @param {number} seq */
function onPointer(cid, seq) {
  const conv = store.convs.get(cid);
  if (!conv || !store.pointer(cid, seq)) return;
  if (conv.unread > 0) quietly(refreshUnread());
  refreshList();
}

/** @param {any} frame */
function onRead(frame) {
  const conv = store.convs.get(frame.conversation_id);
  if (!conv) return;
  if (frame.user_id === store.me.user_id) return onPointer(conv.id, frame.seq);
  if (frame.seq <= conv.peerRead) return;
  conv.peerRead = frame.seq;
  if (store.openId === conv.id) renderMessages(store, conv, threadActions);
}

/** @param {any} frame */
function onDelivered(frame) {
  const conv = store.convs.get(frame.conversation_id);
  if (!conv || frame.user_id === store.me.user_id || frame.seq <= conv.peerDelivered) return;
  conv.peerDelivered = frame.seq;
  refreshRows(conv);
}

/** @param {any} frame */
function onReceipts(frame) {
  const conv = store.convs.get(frame.conversation_id);
  if (!conv) return;
  for (const c of frame.counts) conv.receipts.set(c.seq, { read_by: c.read_by, delivered_to: c.delivered_to ?? 0, of: c.of });
  refreshRows(conv);
}

/** @param {any} frame */
function onTyping(frame) {
  const conv = store.convs.get(frame.conversation_id);
  if (!conv || frame.user_id === store.me.user_id) return;
  conv.typing.set(frame.user_id, Date.now() + TYPING_SHOWN_MS);
  if (store.openId === conv.id) renderTyping(store, conv);
  setTimeout(() => {
    if (store.openId === conv.id) renderTyping(store, conv);
  }, TYPING_SHOWN_MS + 50);
}

// -- loading ----------------------------------------------------------------------------------
/** @typedef {import("./store.js").Member} Member */

/** @param {Conv} conv */
async function loadMembers(conv) {
  try {
    /** @type {{members: Member[]}} */
    const { members } = await api.members(conv.id);
    conv.members = new Map(members.map((m) => [m.user_id, { username: m.username, role: m.role }]));
    for (const m of members) store.member(m);
    conv.member_count = members.length;
    conv.role = conv.members.get(store.me.user_id)?.role || conv.role;
    if (conv.kind === "direct") conv.peer = members.find((m) => m.user_id !== store.me.user_id)?.user_id ?? null;
    const others = members.map((m) => m.user_id).filter((uid) => uid !== store.me.user_id);
    if (others.length) {
      const seen = await api.presence(others.slice(0, 1000));
      for (const entry of seen.presence) store.setPresence(entry);
    }
  } catch (err) {
    if (err instanceof ApiError && err.code === "not_member") return;
    throw err;
  }
  refreshList();
  if (store.openId === conv.id) {
    renderHead(store, conv);
    renderMembers(store, conv, removeMember);
    renderMessages(store, conv, threadActions);
  }
}

/** @type {Set<number>} */
const presenceAsked = new Set();
/** @param {number} uid */
async function lookupPresence(uid) {
  if (presenceAsked.has(uid)) return;
  presenceAsked.add(uid);
  const seen = await api.presence([uid]);
  if (seen.presence.some((/** @type {any} */ entry) => store.setPresence(entry))) refreshPresence();
}

/** @param {Conv} conv */
async function loadPreview(conv) {
  const { messages } = await api.history(conv.id, { limit: 1 });
  if (messages.length && (!conv.lastEvent || messages[0].seq > conv.lastEvent.seq)) conv.lastEvent = messages[0];
  refreshList();
}

async function refreshUnread() {
  /** @type {{conversations: {conversation_id: number, last_read_seq: number, unread: number}[]}} */
  const { conversations } = await api.readState();
  for (const entry of conversations) {
    const conv = store.convs.get(entry.conversation_id);
    if (!conv) continue;
    conv.read = Math.max(conv.read, entry.last_read_seq);
    // Exact only up to what the server had; never raise a badge from a stale answer.
    conv.unread = Math.min(conv.unread, entry.unread);
  }
  refreshList();
}

/** @param {import("./store.js").Conv} conv @param {number} [before] */
async function loadHistory(conv, before) {
  /** @type {{messages: ChatEvent[]}} */
  const { messages } = await api.history(conv.id, { before, limit: PAGE });
  store.history(conv, messages, PAGE);
  const texts = messages.filter((m) => m.kind === "text");
  if (texts.length) {
    const lo = Math.max(texts[0].seq, texts[texts.length - 1].seq - 199);
    const receipts = await api.receipts(conv.id, lo, texts[texts.length - 1].seq);
    for (const c of receipts.counts) {
      if (!conv.receipts.has(c.seq) || before === undefined) {
        conv.receipts.set(c.seq, { read_by: c.read_by, delivered_to: c.delivered_to ?? 0, of: c.of });
      }
      if (conv.kind === "direct" && c.read_by > 0) conv.peerRead = Math.max(conv.peerRead, c.seq);
      if (conv.kind === "direct" && c.delivered_to > 0) conv.peerDelivered = Math.max(conv.peerDelivered, c.seq);
    }
  }
}

// -- the open conversation ----------------------------------------------------------------------
/** @param {number} cid @param {boolean} [fromHistory] Back or Forward brought it back */
async function openThread(cid, fromHistory = false) {
  const conv = store.convs.get(cid);
  if (!conv) return;
  if (!fromHistory) {
    // A history entry per open conversation, so Back returns to the list (on a phone, the
    // other pane) instead of leaving the app; another conversation replaces it.
    const entry = { chatd: "thread", cid };
    if (history.state?.chatd === "thread") history.replaceState(entry, "");
    else history.pushState(entry, "");
  }
  if (store.openId !== cid) editing.cancel();
  hidePanels(false);
  store.openId = cid;
  conv.found = null;
  document.body.dataset.view = "thread";
  $("#empty").hidden = true;
  $("#thread-body").hidden = false;
  $("#members").hidden = true;
  $("#members-toggle").setAttribute("aria-expanded", "false");
  setText($("#members-error"), "");
  setAttr($("#thread-body"), "data-conversation-id", cid);
  renderHead(store, conv);
  renderAlerts();
  desktop?.seen(cid);
  renderTyping(store, conv);
  refreshList();
  $("#messages").replaceChildren();
  await loadHistory(conv);
  if (store.openId !== cid) return;
  renderMessages(store, conv, threadActions);
  const scroller = $("#scroller");
  scroller.scrollTop = scroller.scrollHeight;
  $("#composer-input").focus();
  markRead();
}

/** A search result: open its conversation, load history back to the message, scroll it into
 * view and highlight it. @param {number} cid @param {number} seq */
async function jumpTo(cid, seq) {
  if (!store.convs.has(cid)) {
    setText($("#sidebar-error"), "You are no longer a member of that conversation");
    return;
  }
  if (store.openId !== cid) await openThread(cid);
  const conv = store.convs.get(cid);
  while (store.openId === cid && !conv.events.has(seq) && !conv.complete && conv.oldest !== null && conv.oldest > seq) {
    await loadHistory(conv, conv.oldest);
  }
  if (store.openId !== cid) return;
  conv.found = seq;
  renderMessages(store, conv, threadActions);
  const li = /** @type {HTMLElement|null} */ ($("#messages").querySelector(`li[data-seq="${seq}"]`));
  if (!li) return;
  li.scrollIntoView({ block: "center" });
  li.focus({ preventScroll: true });
}

/** @type {{q: string, next: number|null}} the search shown */
const searching = { q: "", next: null };

/** @param {boolean} more the next page of the same search */
async function runSearch(more) {
  const q = more ? searching.q : /** @type {HTMLInputElement} */ ($("#search-input")).value.trim();
  if (!q) return;
  const found = await api.search(q, more ? searching.next : null);
  searching.q = q;
  searching.next = found.next_before;
  renderResults(store, found.results, more, found.next_before !== null, (cid, seq) => quietly(jumpTo(cid, seq)));
}

/** @param {number} cid */
function showThread(cid) {
  quietly(openThread(cid));
}

/** @param {boolean} [fromHistory] */
function closeThread(fromHistory = false) {
  if (!fromHistory && history.state?.chatd === "thread") history.replaceState(null, "");
  store.openId = null;
  document.body.dataset.view = "list";
  $("#thread-body").hidden = true;
  $("#empty").hidden = false;
}

/** The open conversation's rows that changed. @param {Conv} conv */
function refreshRows(conv) {
  if (store.openId === conv.id) renderMessages(store, conv, threadActions);
}

/** Mark read what is on screen, when the window is focused and visible (§4.8). */
function markRead() {
  const cid = store.openId;
  if (cid === null || document.visibilityState !== "visible" || !document.hasFocus()) return;
  const conv = store.convs.get(cid);
  const view = $("#scroller").getBoundingClientRect();
  let seen = 0;
  for (const li of /** @type {NodeListOf<HTMLElement>} */ ($("#messages").querySelectorAll("li[data-seq]"))) {
    const box = li.getBoundingClientRect();
    if (box.bottom > view.top && box.top < view.bottom) seen = Math.max(seen, Number(li.dataset.seq));
  }
  // Edits and deletes have no row: with the last row on screen, they are read too (§4.11).
  if (seen > 0 && seen >= Math.max(0, ...conv.events.keys())) seen = conv.last;
  if (seen > conv.read && seen <= conv.last) {
    socket?.raw({ type: "read", conversation_id: cid, seq: seen });
    store.pointer(cid, seen);
    refreshList();
  }
}

/** @type {import("./view/thread.js").ThreadActions} */
const threadActions = {
  retry(cid, cmid) {
    const conv = store.convs.get(cid);
    const own = conv.own.get(cmid);
    own.state = "pending";
    own.error = null;
    refreshRows(conv);
    const { body, created_at } = own;
    socket.send({ client_msg_id: cmid, conversation_id: cid, body, created_at, attachments: own.attachments });
  },
  files: (files) => attachments.view(files),
  async readers(cid, seq, li) {
    try {
      /** @type {{user_ids: number[]}} */
      const { user_ids } = await api.readers(cid, seq);
      showReaders(li, user_ids.map((uid) => store.name(uid)));
    } catch (err) {
      showReaders(li, null, describe(err)); // e.g. group_too_large: only counts are kept
    }
  },
  edit: (cid, seq) => editing.begin(cid, seq),
  remove: (cid, seq) => editing.remove(cid, seq),
  dismiss: (cid, cmid) => editing.dismiss(cid, cmid),
};

/** @param {number} uid */
async function removeMember(uid) {
  try {
    await api.removeMember(store.openId, uid);
  } catch (err) {
    setText($("#members-error"), describe(err));
  }
}

/** @param {string} body @returns {boolean} whether it was taken (sent or queued) */
function send(body) {
  const cid = store.openId;
  const withFiles = attachments.pending.length > 0;
  if (cid === null || (!body.trim() && !withFiles) || !withinLimit(body, store.maxChars)) return false;
  const problem = attachments.problem();
  if (problem) {
    setText($("#composer-error"), problem);
    return false;
  }
  const files = withFiles ? attachments.take() : undefined;
  const conv = store.convs.get(cid);
  const cmid = crypto.randomUUID();
  const created_at = new Date().toISOString();
  conv.own.set(cmid, { client_msg_id: cmid, body, state: "pending", error: null, seq: null, created_at, attachments: files });
  renderMessages(store, conv, threadActions);
  $("#scroller").scrollTop = $("#scroller").scrollHeight;
  socket.send({ client_msg_id: cmid, conversation_id: cid, body, created_at, attachments: files });
  refreshList();
  return true;
}

/** Background loads: a failure leaves what is shown (the next event or reconnect refreshes it).
 * @param {Promise<unknown>} promise */
function quietly(promise) {
  promise.catch((err) => console.warn("chatd:", describe(err)));
}

/** New messages, for screen readers (a polite live region). @param {string} text */
function announce(text) {
  const region = $("#announcer");
  region.append(h("p", { text }));
  while (region.childElementCount > 5) region.firstElementChild.remove();
}

function refreshPresence() {
  refreshList();
  if (store.openId === null) return;
  const conv = store.convs.get(store.openId);
  renderHead(store, conv);
  if (!$("#members").hidden) renderMembers(store, conv, removeMember);
}

// -- static controls ------------------------------------------------------------------------------
/** A username typed in `input`; a blank one is refused here, saying so.
 * @param {HTMLInputElement} input */
function username(input) {
  const name = input.value.trim();
  if (!name) throw new Error("Type a username");
  return name;
}

/** @param {string} id @param {(form: HTMLFormElement) => Promise<void>} handler @param {string} errorId */
function onSubmit(id, handler, errorId) {
  const form = /** @type {HTMLFormElement} */ ($(id));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setText($(errorId), "");
    try {
      await handler(form);
    } catch (err) {
      setText($(errorId), describe(err));
    }
  });
}

function bindStatic() {
  onSubmit("#direct-form", async () => {
    const input = /** @type {HTMLInputElement} */ ($("#direct-username"));
    const conv = store.upsert(await api.openDirect(username(input)));
    input.value = "";
    await loadMembers(conv);
    await openThread(conv.id);
  }, "#sidebar-error");
  onSubmit("#group-form", async () => {
    const title = /** @type {HTMLInputElement} */ ($("#group-title"));
    const names = /** @type {HTMLInputElement} */ ($("#group-members"));
    const usernames = names.value.split(",").map((n) => n.trim()).filter(Boolean);
    for (const name of usernames) {
      const found = await api.findUser(name); // says which name is wrong before creating anything
      store.names.set(found.user_id, found.username);
    }
    const conv = store.upsert(await api.createGroup(title.value, usernames));
    title.value = "";
    names.value = "";
    /** @type {HTMLDetailsElement} */ ($("#group-details")).open = false;
    await loadMembers(conv);
    await openThread(conv.id);
  }, "#sidebar-error");
  onSubmit("#search-form", () => runSearch(false), "#sidebar-error");
  $("#search-more").addEventListener("click", () => runSearch(true).catch((err) => setText($("#sidebar-error"), describe(err))));
  $("#search-close").addEventListener("click", () => {
    closeResults();
    /** @type {HTMLInputElement} */ ($("#search-input")).value = "";
  });
  onSubmit("#add-form", async () => {
    const input = /** @type {HTMLInputElement} */ ($("#add-username"));
    await api.addMembers(store.openId, [username(input)]);
    input.value = "";
  }, "#members-error");
  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = /** @type {HTMLTextAreaElement} */ ($("#composer-input"));
    if (editing.current) editing.submit(input.value);
    else if (send(input.value)) input.value = "";
    renderCount(store.maxChars);
  });
  bindAttachments(attachments);
  const composer = /** @type {HTMLTextAreaElement} */ ($("#composer-input"));
  composer.addEventListener("keydown", (event) => {
    if (mentionBox.key(event) || editing.key(event)) return;
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      /** @type {HTMLFormElement} */ ($("#composer")).requestSubmit();
    }
  });
  composer.addEventListener("input", () => {
    renderCount(store.maxChars);
    mentionBox.update();
    if (store.openId === null || !composer.value.trim() || Date.now() - lastTyping < TYPING_EVERY_MS) return;
    lastTyping = Date.now();
    socket?.raw({ type: "typing", conversation_id: store.openId });
  });
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
  $("#back").addEventListener("click", () => {
    if (openPanel() !== null) hidePanels();
    else if (history.state?.chatd === "thread") history.back(); // popstate closes it
    else closeThread();
  });
  window.addEventListener("popstate", (event) => {
    const cid = event.state?.chatd === "thread" ? event.state.cid : null;
    if (cid !== null && store.convs.has(cid)) quietly(openThread(cid, true));
    else if (store.openId !== null) closeThread(true);
  });
  $("#members-toggle").addEventListener("click", () => {
    const panel = $("#members");
    panel.hidden = !panel.hidden;
    if (!panel.hidden) setText($("#members-error"), "");
    $("#members-toggle").setAttribute("aria-expanded", String(!panel.hidden));
    if (!panel.hidden) {
      const conv = store.convs.get(store.openId);
      renderMembers(store, conv, removeMember);
      quietly(loadMembers(conv)); // as they are now (names, who was deactivated since)
    }
    const scroller = $("#scroller");
    scroller.scrollTop = scroller.scrollHeight;
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("#members").hidden) $("#members-toggle").click();
  });
  $("#older").addEventListener("click", () => quietly(loadOlder()));
  bindAccount(api, {
    me: () => store.me,
    renamed(name) {
      store.me.display_name = name;
      store.names.set(store.me.user_id, name || store.me.username);
    },
  });
  bindAdmin(api, () => store.me.user_id, (user) => {
    store.member(user); // deactivated or back: shown at once where this admin sees them
    refreshPresence();
  });
  $("#account-button").addEventListener("click", () => quietly(openAccount()));
  $("#admin-button").addEventListener("click", () => quietly(openAdmin()));
  for (const close of document.querySelectorAll(".panel-close")) close.addEventListener("click", () => hidePanels());
  bindAlerts();
  $("#scroller").addEventListener("scroll", () => {
    if ($("#scroller").scrollTop < 40) quietly(loadOlder());
    markRead();
  });
  document.addEventListener("visibilitychange", markRead);
  window.addEventListener("focus", markRead);
}

function bindAlerts() {
  $("#alerts-toggle").addEventListener("click", () => {
    const panel = $("#alerts");
    panel.hidden = !panel.hidden;
    $("#alerts-toggle").setAttribute("aria-expanded", String(!panel.hidden));
    renderAlerts();
  });
  $("#alerts-enable").addEventListener("click", async () => {
    setText($("#alerts-error"), "");
    try {
      if ((await Notification.requestPermission()) === "granted") await push.subscribe();
    } catch (err) {
      // Desktop notifications work without pushes (e.g. a server without a VAPID key).
      setText($("#alerts-error"), `Notifications while no tab is open are unavailable: ${describe(err)}`);
    }
    renderAlerts();
  });
  for (const [id, name] of [["#alerts-dnd", "dnd"], ["#alerts-preview", "push_preview"]]) {
    const box = /** @type {HTMLInputElement} */ ($(id));
    box.addEventListener("change", async () => {
      setText($("#alerts-error"), "");
      try {
        store.setNotify(await api.call("PUT", "/v1/me/notifications", { [name]: box.checked }));
      } catch (err) {
        setText($("#alerts-error"), describe(err));
      }
      renderAlerts();
      refreshList();
    });
  }
  $("#mute-toggle").addEventListener("click", async () => {
    const cid = store.openId;
    if (cid === null) return;
    try {
      const muted = !store.notify.muted.has(cid);
      store.setNotify(await api.call("PUT", `/v1/conversations/${cid}/mute`, { muted }));
    } catch (err) {
      setText($("#composer-error"), describe(err));
    }
    renderAlerts();
    refreshList();
  });
  // A click on a push notification (sw.js) in an open tab.
  navigator.serviceWorker?.addEventListener("message", (event) => {
    if (event.data?.type === "open" && store.convs.has(event.data.conversation_id)) {
      quietly(openThread(event.data.conversation_id));
    }
  });
}

let loadingOlder = false;
async function loadOlder() {
  const conv = store.openId !== null ? store.convs.get(store.openId) : null;
  if (!conv || conv.complete || loadingOlder || conv.oldest === null) return;
  loadingOlder = true;
  try {
    const scroller = $("#scroller");
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    await loadHistory(conv, conv.oldest);
    renderMessages(store, conv, threadActions);
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
  } finally {
    loadingOlder = false;
  }
}

boot();
