// What the client knows (docs/protocol.md §8: last[cid], read[cid], presence by version), and
// the rules that keep it right across reconnects: no duplicate events, no unread over-count.
import { mentions } from "./view/text.js";

/** Kinds that are a change of an earlier message (`ref_seq`), not a row of their own (§4.11). */
export const CHANGES = new Set(["edit", "delete"]);

/**
 * @typedef {{type: "message", conversation_id: number, seq: number, id: number, kind: string,
 *   sender_id: number, client_msg_id: string|null, body: string, created_at: string,
 *   user_ids?: number[], ref_seq?: number, edited_at?: string, deleted_at?: string,
 *   changed?: number, attachments?: import("./files.js").FileInfo[]}} ChatEvent  (changed: the seq of the last edit or delete applied)
 * @typedef {{status: string, version: number, last_seen: string|null}} PresenceEntry
 * @typedef {{user_id: number, username: string, role: string, display_name?: string|null,
 *   deactivated?: boolean}} Member
 * @typedef {{client_msg_id: string, body: string, state: "pending"|"saved"|"failed",
 *   error: string|null, seq: number|null, created_at: string,
 *   attachments?: import("./files.js").FileInfo[]}} Own
 * @typedef {{client_msg_id: string, kind: "edit"|"delete", seq: number, body: string,
 *   state: "pending"|"saved"|"failed", error: string|null, done: number|null}} Amend
 *   my edit or delete of the message at `seq` until its event arrives (done: the seq its ack gave it)
 * @typedef {object} Conv
 * @property {number} id
 * @property {"direct"|"group"} kind
 * @property {string|null} title
 * @property {string} created_at
 * @property {number} member_count
 * @property {string|null} role
 * @property {number} last  highest seq held (the `since` value)
 * @property {number} read  my read pointer
 * @property {number} unread
 * @property {number} mentions  unread messages that mention me, among those received here
 * @property {number} counted  unread is exact up to this seq (from `ready` or the HTTP query)
 * @property {Map<number, ChatEvent>} events  loaded messages and membership events by seq
 * @property {Set<number>} changes  seqs of the edits and deletes received
 * @property {Map<string, Own>} own  my sends by client_msg_id
 * @property {Map<string, Amend>} amends  my edits and deletes not received as events yet, in the order made
 * @property {number|null} oldest  smallest seq loaded (null: history not loaded yet)
 * @property {boolean} complete  history reaches seq 1
 * @property {Map<number, {username: string, role: string}>|null} members
 * @property {number|null} peer  the other user of a direct conversation
 * @property {number} peerRead  the peer's read pointer (direct)
 * @property {number|null} found  the seq a search result opened (highlighted)
 * @property {number} peerDelivered  the peer's delivery pointer (direct): a device of theirs got up to it
 * @property {Map<number, {read_by: number, delivered_to: number, of: number}>} receipts  group counts by seq
 * @property {ChatEvent|null} lastEvent
 * @property {Map<number, number>} typing  user -> when their "typing" expires (ms)
 */

export const TYPING_SHOWN_MS = 5000;

export class Store {
  constructor() {
    /** @type {{user_id: number, username: string, display_name?: string|null, admin?: boolean}|null} */
    this.me = null;
    /** @type {Map<number, Conv>} */
    this.convs = new Map();
    /** @type {Map<number, PresenceEntry>} */
    this.presence = new Map();
    /** @type {Map<number, string>} what a user is called here: the display name, else the username */
    this.names = new Map();
    /** @type {Set<number>} users deactivated by an admin (as member lists say) */
    this.deactivated = new Set();
    /** @type {number|null} */
    this.openId = null;
    /** @type {number|null} the server's CHATD_MAX_MESSAGE_CHARS (`ready.limits`), once known */
    this.maxChars = null;
    /** @type {number|null} the server's CHATD_EDIT_WINDOW_S (`ready.limits`), once known */
    this.editWindowS = null;
    /** @type {Set<(what: string, cid?: number) => void>} */
    this.listeners = new Set();
    /** @type {Set<number>} conversations listed by the current `ready` and its pages */
    this.listed = new Set();
    /** My notification settings, the same on all my devices (`notify_settings`, §12).
     * @type {{dnd: boolean, push_preview: boolean, muted: Set<number>}} */
    this.notify = { dnd: false, push_preview: false, muted: new Set() };
  }

  /** @param {{dnd: boolean, push_preview: boolean, muted: number[]}} settings */
  setNotify(settings) {
    this.notify = { dnd: settings.dnd, push_preview: settings.push_preview, muted: new Set(settings.muted) };
  }

  /** @param {string} what @param {number} [cid] */
  emit(what, cid) {
    for (const fn of this.listeners) fn(what, cid);
  }

  /** @param {any} raw a conversation object (§3) @returns {Conv} */
  upsert(raw) {
    let conv = this.convs.get(raw.id);
    if (!conv) {
      conv = {
        id: raw.id,
        kind: raw.kind,
        title: raw.title,
        created_at: raw.created_at,
        member_count: raw.member_count,
        role: raw.role || null,
        last: raw.last_seq,
        read: 0,
        unread: 0,
        mentions: 0,
        counted: raw.last_seq,
        events: new Map(),
        changes: new Set(),
        own: new Map(),
        amends: new Map(),
        oldest: null,
        complete: false,
        members: null,
        peer: null,
        peerRead: 0,
        peerDelivered: 0,
        found: null,
        receipts: new Map(),
        lastEvent: null,
        typing: new Map(),
      };
      this.convs.set(raw.id, conv);
    } else {
      conv.member_count = raw.member_count;
      conv.title = raw.title;
    }
    return conv;
  }

  /**
   * `ready` and the `conversations` pages after it (§4.1, §8 step 4): merge conversations,
   * unread and presence. Once the last page is in (`more` false), returns the ids of
   * conversations I was removed from while away; before that, null. Unread is taken as the
   * server counts it up to its last_seq, and catch-up events up to there are not counted again.
   * @param {any} frame
   */
  ready(frame) {
    if (frame.type === "ready") {
      this.listed = new Set();
      for (const entry of frame.presence) this.setPresence(entry);
    }
    for (const raw of frame.conversations) {
      const known = this.convs.has(raw.id);
      const conv = this.upsert(raw);
      this.listed.add(raw.id);
      if (!known) conv.last = raw.last_seq; // not in `since`: live from last_seq
      conv.read = Math.max(conv.read, raw.last_read_seq);
      conv.unread = raw.unread;
      conv.counted = raw.last_seq;
    }
    if (frame.more) return null;
    const removed = [...this.convs.keys()].filter((cid) => !this.listed.has(cid));
    for (const cid of removed) this.convs.delete(cid);
    return removed;
  }

  /** @param {{user_id: number} & PresenceEntry} entry */
  setPresence(entry) {
    const held = this.presence.get(entry.user_id);
    if (held && held.version >= entry.version) return false;
    this.presence.set(entry.user_id, { status: entry.status, version: entry.version, last_seen: entry.last_seen });
    return true;
  }

  /**
   * A `message` frame (live or caught up). Returns false for a seq already held.
   * @param {ChatEvent} event
   */
  message(event) {
    const conv = this.convs.get(event.conversation_id);
    if (!conv) return false;
    if (event.seq <= conv.last && (conv.events.has(event.seq) || conv.changes.has(event.seq))) return false;
    conv.last = Math.max(conv.last, event.seq);
    const unseen = event.seq > conv.counted && event.seq > conv.read;
    conv.counted = Math.max(conv.counted, event.seq);
    if (CHANGES.has(event.kind)) return this.change(conv, event); // never unread (§4.11)
    this.remember(conv, event);
    const mine = event.sender_id === this.me.user_id;
    if (mine && event.client_msg_id && conv.own.has(event.client_msg_id)) {
      conv.own.get(event.client_msg_id).seq = event.seq;
    }
    if (!mine && event.kind === "text" && unseen) {
      conv.unread += 1;
      if (mentions(event.body, this.me.username)) conv.mentions += 1;
    }
    conv.typing.delete(event.sender_id);
    if (event.kind === "members_added" || event.kind === "members_removed") this.membershipChanged(conv, event);
    return true;
  }

  /**
   * An edit or delete: the message it refers to (if loaded) shows its current version. Applied
   * once and in seq order (`changed`), so a late copy never undoes a later change.
   * @param {Conv} conv @param {ChatEvent} event @returns {boolean}
   */
  change(conv, event) {
    conv.changes.add(event.seq);
    if (event.client_msg_id && event.sender_id === this.me?.user_id) conv.amends.delete(event.client_msg_id);
    const original = conv.events.get(event.ref_seq);
    if (!original || (original.changed ?? 0) >= event.seq) return true;
    const now = { ...original, changed: event.seq };
    if (event.kind === "edit" && !original.deleted_at) {
      now.body = event.body;
      now.edited_at = event.edited_at ?? event.created_at;
    } else if (event.kind === "delete") {
      now.body = "";
      now.deleted_at = event.deleted_at ?? event.created_at;
    }
    conv.events.set(original.seq, now);
    if (conv.lastEvent && conv.lastEvent.seq === original.seq) conv.lastEvent = now;
    return true;
  }

  /** @param {Conv} conv @param {ChatEvent} event */
  remember(conv, event) {
    conv.events.set(event.seq, event);
    if (!conv.lastEvent || event.seq > conv.lastEvent.seq) conv.lastEvent = event;
  }

  /** @param {Conv} conv @param {ChatEvent} event */
  membershipChanged(conv, event) {
    const delta = event.user_ids.length;
    conv.member_count += event.kind === "members_added" ? delta : -delta;
    conv.members = null; // re-read when needed
  }

  /** An older (or first) page of history.
   * @param {Conv} conv @param {ChatEvent[]} events @param {number} limit the page size asked for */
  history(conv, events, limit) {
    for (const event of events) {
      if (CHANGES.has(event.kind)) {
        this.change(conv, event); // the original in the page is current already
        continue;
      }
      if ((conv.events.get(event.seq)?.changed ?? 0) > 0) continue; // changed live since
      conv.events.set(event.seq, event);
      if (!conv.lastEvent || event.seq > conv.lastEvent.seq) conv.lastEvent = event;
      if (event.sender_id === this.me?.user_id && event.client_msg_id && conv.own.has(event.client_msg_id)) {
        conv.own.get(event.client_msg_id).seq = event.seq;
      }
    }
    const lowest = events.length ? events[0].seq : conv.oldest ?? conv.last + 1;
    conv.oldest = conv.oldest === null ? lowest : Math.min(conv.oldest, lowest);
    if (events.length < limit || lowest <= 1) conv.complete = true;
  }

  /** My pointer moved (my `read_state`, another tab's, or a reply). @param {number} cid @param {number} seq */
  pointer(cid, seq) {
    const conv = this.convs.get(cid);
    if (!conv || seq <= conv.read) return false;
    conv.read = seq;
    if (seq >= conv.counted) {
      conv.unread = 0;
      conv.mentions = 0;
    }
    return true;
  }

  /** My newest send not stored yet (pending, or failed), if any. @param {Conv} conv */
  unsent(conv) {
    /** @type {Own|null} */
    let newest = null;
    for (const own of conv.own.values()) if (own.state !== "saved") newest = own;
    return newest;
  }

  /** My latest edit or delete of the message at `seq` not received as an event yet, if any.
   * @param {Conv} conv @param {number} seq */
  amendOf(conv, seq) {
    /** @type {Amend|null} */
    let latest = null;
    for (const amend of conv.amends.values()) if (amend.seq === seq) latest = amend;
    return latest;
  }

  /** My edit or delete of the message at `seq` that shows on it: not stored yet, or stored and
   * its event not in yet (a refused one does not). @param {Conv} conv @param {number} seq */
  pendingAmend(conv, seq) {
    const amend = this.amendOf(conv, seq);
    return amend && amend.state !== "failed" ? amend : null;
  }

  /** Time-ordered list for the sidebar: latest activity first. */
  ordered() {
    const activity = (/** @type {Conv} */ c) => (c.lastEvent ? c.lastEvent.created_at : c.created_at);
    return [...this.convs.values()].sort((a, b) => activity(b).localeCompare(activity(a)) || b.id - a.id);
  }

  /** @param {Conv} conv */
  title(conv) {
    if (conv.kind === "group") return conv.title;
    return conv.peer !== null ? this.names.get(conv.peer) || `user ${conv.peer}` : "…";
  }

  /** What a member list (or the admin screen) says of a user: their name here, and whether
   * they are deactivated.
   * @param {{user_id: number, username: string, display_name?: string|null, deactivated?: boolean}} m */
  member(m) {
    this.names.set(m.user_id, m.display_name || m.username);
    if (m.deactivated) this.deactivated.add(m.user_id);
    else this.deactivated.delete(m.user_id);
  }

  /** @param {number} uid */
  name(uid) {
    return this.names.get(uid) || `user ${uid}`;
  }
}
