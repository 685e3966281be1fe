// The open conversation: opening and closing it (with a history entry, so Back returns to the
// list), jumping to a search result, older pages as it scrolls up, marking read what is on
// screen, and sending what is typed.
import { $, setAttr, setText } from "./view/dom.js";
import { renderHead, renderMessages, renderTyping } from "./view/thread.js";
import { hidePanels } from "./view/panels.js";
import { withinLimit } from "./view/composer.js";
import { attachments, desktop, socket, store } from "./state.js";
import { loadHistory } from "./loading.js";
import { editing, refreshList, renderAlerts, threadActions } from "./views.js";

/** @param {number} cid @param {boolean} [fromHistory] Back or Forward brought it back */
export async function openThread(cid, fromHistory = false) {
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
  const focused = document.activeElement;
  await loadHistory(conv);
  if (store.openId !== cid) return;
  renderMessages(store, conv, threadActions);
  const scroller = $("#scroller");
  scroller.scrollTop = scroller.scrollHeight;
  // To the composer, unless the user has put the focus somewhere else while the history loaded
  // (the members panel, say): typing there must not end up in a message.
  if (document.activeElement === focused || document.activeElement === document.body) $("#composer-input").focus();
  markRead();
}

/** A search result: open its conversation, load history back to the message, scroll it into
 * view and highlight it. @param {number} cid @param {number} seq */
export async function jumpTo(cid, seq) {
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

/** @param {boolean} [fromHistory] */
export function closeThread(fromHistory = false) {
  if (!fromHistory && history.state?.chatd === "thread") history.replaceState(null, "");
  store.openId = null;
  document.body.dataset.view = "list";
  $("#thread-body").hidden = true;
  $("#empty").hidden = false;
}

/** Mark read what is on screen, when the window is focused and visible (§4.8). */
export function markRead() {
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

/** @param {string} body @returns {boolean} whether it was taken (sent or queued) */
export function send(body) {
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

let loadingOlder = false;
export async function loadOlder() {
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
