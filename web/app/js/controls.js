// The page's own controls, bound once: starting conversations, search, members, the message
// box, navigation (Back, the browser's history), panels, scrolling, and the notification settings.
import { describe } from "./api.js";
import { $, setText } from "./view/dom.js";
import { renderMembers } from "./view/thread.js";
import { bindAccount, openAccount } from "./view/account.js";
import { bindAdmin, openAdmin } from "./view/admin.js";
import { hidePanels, openPanel } from "./view/panels.js";
import { renderCount } from "./view/composer.js";
import { bindAttachments } from "./view/attachments.js";
import { renderResults, closeResults } from "./view/search.js";
import { api, attachments, mentionBox, push, quietly, socket, store } from "./state.js";
import { loadMembers } from "./loading.js";
import { closeThread, jumpTo, loadOlder, markRead, openThread, send } from "./conversation.js";
import { editing, refreshList, refreshPresence, removeMember, renderAlerts } from "./views.js";

const TYPING_EVERY_MS = 2000;
let lastTyping = 0;

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

export function bindStatic() {
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
  $("#conversations").addEventListener("click", (event) => {
    const target = /** @type {Element} */ (event.target);
    const item = /** @type {HTMLElement|null} */ (target.closest("li[data-conversation-id]"));
    if (item && target.closest("button")) quietly(openThread(Number(item.dataset.conversationId)));
  });
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
