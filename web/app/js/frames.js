// The server's frames (docs/protocol.md §4.3) applied to the store and the views: `ready` and
// its pages, messages (with delivery confirmations), receipts, presence, typing, notification
// settings, and the acks of my sends.
import { $, h } from "./view/dom.js";
import { renderHead, renderMessages, renderTyping } from "./view/thread.js";
import { renderCount } from "./view/composer.js";
import { TYPING_SHOWN_MS } from "./store.js";
import { isChange } from "./outbox.js";
import { desktop, quietly, socket, store } from "./state.js";
import { loadMembers, loadNotify, loadPreview, lookupPresence, refreshUnread } from "./loading.js";
import { closeThread, markRead, openThread } from "./conversation.js";
import { editing, refreshList, refreshPresence, refreshRows, renderAlerts, threadActions } from "./views.js";

/** @typedef {import("./store.js").ChatEvent} ChatEvent @typedef {import("./outbox.js").OutboxEntry} OutboxEntry */

// Delivery receipts: one cumulative `received` per conversation per this interval (§4.8).
const RECEIVED_EVERY_MS = 100;

/** @param {any} frame */
export function onFrame(frame) {
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

/** Outbox entries as my pending sends, edits and deletes in their conversations (after
 * `ready`, or taken over). @param {Iterable<OutboxEntry>} entries */
export function showPending(entries) {
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

/** New messages, for screen readers (a polite live region). @param {string} text */
function announce(text) {
  const region = $("#announcer");
  region.append(h("p", { text }));
  while (region.childElementCount > 5) region.firstElementChild.remove();
}

/** My notification settings changed on some device (§12). @param {any} frame */
function onNotifySettings(frame) {
  store.setNotify(frame);
  renderAlerts();
  refreshList();
}

/** @param {any} ack */
export function onAck(ack) {
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
