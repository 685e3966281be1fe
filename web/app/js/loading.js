// What the app loads over HTTP besides the WebSocket's events: members and their presence,
// history pages with their receipts, a conversation's last message, unread counts and the
// notification settings. Each puts what it got in the store and refreshes the views.
import { ApiError } from "./api.js";
import { renderHead, renderMembers, renderMessages } from "./view/thread.js";
import { api, store } from "./state.js";
import { refreshList, refreshPresence, removeMember, renderAlerts, threadActions } from "./views.js";

/** @typedef {import("./store.js").Conv} Conv @typedef {import("./store.js").ChatEvent} ChatEvent
 * @typedef {import("./store.js").Member} Member */

const PAGE = 50;

/** @param {Conv} conv */
export async function loadMembers(conv) {
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
export const presenceAsked = new Set();

/** @param {number} uid */
export async function lookupPresence(uid) {
  if (presenceAsked.has(uid)) return;
  presenceAsked.add(uid);
  const seen = await api.presence([uid]);
  if (seen.presence.some((/** @type {any} */ entry) => store.setPresence(entry))) refreshPresence();
}

/** @param {Conv} conv */
export async function loadPreview(conv) {
  const { messages } = await api.history(conv.id, { limit: 1 });
  if (messages.length && (!conv.lastEvent || messages[0].seq > conv.lastEvent.seq)) conv.lastEvent = messages[0];
  refreshList();
}

export async function refreshUnread() {
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
export async function loadHistory(conv, before) {
  /** @type {{messages: ChatEvent[]}} */
  const { messages } = await api.history(conv.id, { before, limit: PAGE });
  store.history(conv, messages, PAGE);
  const texts = messages.filter((m) => m.kind === "text");
  if (texts.length) {
    const lo = Math.max(texts[0].seq, texts[texts.length - 1].seq - 199);
    const receipts = await api.receipts(conv.id, lo, texts[texts.length - 1].seq);
    // The peer's pointers show in the counts of my messages; those of theirs count me.
    const mine = new Set(texts.filter((m) => m.sender_id === store.me.user_id).map((m) => m.seq));
    for (const c of receipts.counts) {
      if (!conv.receipts.has(c.seq) || before === undefined) {
        conv.receipts.set(c.seq, { read_by: c.read_by, delivered_to: c.delivered_to ?? 0, of: c.of });
      }
      if (conv.kind !== "direct" || !mine.has(c.seq)) continue;
      if (c.read_by > 0) conv.peerRead = Math.max(conv.peerRead, c.seq);
      if (c.delivered_to > 0) conv.peerDelivered = Math.max(conv.peerDelivered, c.seq);
    }
  }
}

export async function loadNotify() {
  store.setNotify(await api.call("GET", "/v1/me/notifications"));
  renderAlerts();
  refreshList();
}
