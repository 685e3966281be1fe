// The open conversation: header with presence, messages with day separators and their state
// (pending / saved / read / read by K of N / failed with a retry), the typing line, members.
import { h, setAttr, setText, $, clock, dayKey, dayLabel, lastSeen } from "./dom.js";

/**
 * @typedef {import("../store.js").Store} Store
 * @typedef {import("../store.js").Conv} Conv
 * @typedef {import("../store.js").ChatEvent} ChatEvent
 * @typedef {import("../store.js").Own} Own
 * @typedef {{retry: (cid: number, cmid: string) => void, readers: (cid: number, seq: number, li: HTMLElement) => void}} ThreadActions
 * @typedef {{key: string, seq: number|null, event: ChatEvent|null, own: Own|null, at: string}} Row
 */

/** One row per event from the server, and per send of mine not yet seen as an event.
 * @param {Store} store @param {Conv} conv @returns {Row[]} */
function rowsOf(store, conv) {
  /** @type {Row[]} */
  const rows = [];
  const ownSeen = new Set();
  for (const seq of [...conv.events.keys()].sort((a, b) => a - b)) {
    const event = conv.events.get(seq);
    const own = event.client_msg_id && event.sender_id === store.me.user_id ? conv.own.get(event.client_msg_id) : null;
    if (own) ownSeen.add(own.client_msg_id);
    rows.push({ key: keyOf(store, event), seq, event, own, at: event.created_at });
  }
  for (const own of conv.own.values()) {
    if (!ownSeen.has(own.client_msg_id) && (own.seq === null || !conv.events.has(own.seq))) {
      rows.push({ key: `c:${own.client_msg_id}`, seq: own.seq, event: null, own, at: own.created_at });
    }
  }
  return rows;
}

/** @param {Store} store @param {ChatEvent} event */
export function keyOf(store, event) {
  return event.sender_id === store.me.user_id && event.client_msg_id ? `c:${event.client_msg_id}` : `s:${event.seq}`;
}

/** The whole list, e.g. after opening or loading an older page.
 * @param {Store} store @param {Conv} conv @param {ThreadActions} actions */
export function renderMessages(store, conv, actions) {
  const list = $("#messages");
  list.replaceChildren();
  let day = null;
  for (const row of rowsOf(store, conv)) {
    const key = dayKey(row.at);
    if (key !== day) {
      list.append(h("li", { class: "day", text: dayLabel(row.at) }));
      day = key;
    }
    list.append(messageRow(store, conv, row, actions));
  }
  $("#older").hidden = conv.complete;
}

/** Add or update one row in place (live event, ack, own send).
 * @param {Store} store @param {Conv} conv @param {string} key @param {ThreadActions} actions */
export function upsertRow(store, conv, key, actions) {
  const list = $("#messages");
  const row = rowsOf(store, conv).find((r) => r.key === key);
  if (!row) return;
  const old = /** @type {HTMLElement} */ (list.querySelector(`li[data-key="${CSS.escape(key)}"]`));
  if (old) {
    const fresh = messageRow(store, conv, row, actions);
    if (old.outerHTML !== fresh.outerHTML) old.replaceWith(fresh);
    return;
  }
  const rows = /** @type {NodeListOf<HTMLElement>} */ (list.querySelectorAll("li.message"));
  const last = rows.length ? rows[rows.length - 1] : null;
  const lastAt = last ? last.dataset.at : null;
  if (!lastAt || dayKey(lastAt) !== dayKey(row.at)) {
    list.append(h("li", { class: "day", text: dayLabel(row.at) }));
  }
  list.append(messageRow(store, conv, row, actions));
}

/**
 * @param {Store} store @param {Conv} conv @param {Row} row
 * @returns {{state: string, text: string, counts?: {read_by: number, of: number}}}
 */
function statusOf(store, conv, row) {
  const own = row.own;
  if (own && own.state === "failed") return { state: "failed", text: own.error || "Not sent" };
  if (own && own.state === "pending") return { state: "pending", text: own.error || "Sending…" };
  if (!row.event || row.event.sender_id !== store.me.user_id || row.event.kind !== "text") {
    return { state: "saved", text: "" };
  }
  const seq = row.seq;
  if (conv.kind === "direct") {
    return seq <= conv.peerRead ? { state: "read", text: "Read" } : { state: "saved", text: "Saved" };
  }
  const counts = conv.receipts.get(seq);
  if (!counts) return { state: "saved", text: "Saved" };
  const text = `Read by ${counts.read_by} of ${counts.of}`;
  return { state: counts.read_by > 0 && counts.read_by >= counts.of ? "read" : "saved", text, counts };
}

/** @param {Store} store @param {Conv} conv @param {Row} row @param {ThreadActions} actions */
function messageRow(store, conv, row, actions) {
  const event = row.event;
  if (event && event.kind !== "text") {
    const names = event.user_ids.map((uid) => store.name(uid)).join(", ");
    const verb = event.kind === "members_added" ? "added" : "removed";
    return h("li", { class: "message system", "data-key": row.key, "data-seq": row.seq, "data-at": row.at },
      `${store.name(event.sender_id)} ${verb} ${names}`);
  }
  const mine = row.own !== null || (event && event.sender_id === store.me.user_id);
  const sender = mine ? "You" : store.name(event.sender_id);
  const status = statusOf(store, conv, row);
  const li = h(
    "li",
    {
      class: `message ${mine ? "mine" : "theirs"}`,
      "data-key": row.key,
      "data-seq": row.seq ?? undefined,
      "data-at": row.at,
      "data-sender": mine ? "me" : event.sender_id,
      "data-state": mine ? status.state : undefined,
      "data-read-by": status.counts ? status.counts.read_by : undefined,
      "data-read-of": status.counts ? status.counts.of : undefined,
    },
    h("span", { class: "meta" }, h("span", { class: "sender", text: sender }), " ",
      h("time", { datetime: row.at, text: clock(row.at) })),
    h("p", { class: "body", text: event ? event.body : row.own.body }),
  );
  if (mine) {
    const line = h("span", { class: "status", role: status.state === "failed" ? "alert" : undefined });
    if (status.counts && conv.members !== null && conv.member_count <= 100) {
      line.append(h("button", { type: "button", class: "link-button readers-button", "aria-expanded": "false",
        onclick: () => actions.readers(conv.id, row.seq, li), text: status.text }));
    } else {
      line.append(status.text);
    }
    if (status.state === "failed") {
      line.append(" ", h("button", { type: "button", class: "link-button retry",
        onclick: () => actions.retry(conv.id, row.own.client_msg_id), text: "Retry" }));
    }
    li.append(line);
  }
  return li;
}

/** Readers of one message, under it.
 * @param {HTMLElement} li @param {string[]|null} names @param {string} [problem] why there is no list */
export function showReaders(li, names, problem) {
  li.querySelector(".readers")?.remove();
  const text = names === null ? problem : names.length ? `Read by ${names.join(", ")}` : "Nobody has read it yet";
  li.append(h("p", { class: "readers muted", "data-readers": names === null ? undefined : names.join(","), text }));
  const button = li.querySelector(".readers-button");
  if (button) button.setAttribute("aria-expanded", "true");
}

/** @param {Store} store @param {Conv} conv */
export function renderHead(store, conv) {
  setText($("#thread-title"), store.title(conv));
  const dot = $("#thread-dot");
  const status = $("#thread-status");
  if (conv.kind === "direct" && conv.peer !== null) {
    const peer = store.presence.get(conv.peer);
    setAttr(dot, "data-presence", peer ? peer.status : "unknown");
    setText(status, !peer ? "" : peer.status === "offline" ? lastSeen(peer.last_seen) : peer.status);
  } else {
    setAttr(dot, "data-presence", "group");
    setText(status, `${conv.member_count} ${conv.member_count === 1 ? "member" : "members"}`);
  }
}

/** @param {Store} store @param {Conv} conv */
export function renderTyping(store, conv) {
  const now = Date.now();
  const who = [...conv.typing.entries()].filter(([, until]) => until > now).map(([uid]) => uid);
  const el = $("#typing");
  setAttr(el, "data-typing", who.length ? who.join(",") : null);
  setText(el, who.length ? `${who.map((uid) => store.name(uid)).join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "");
}

/**
 * @param {Store} store @param {Conv} conv
 * @param {(uid: number) => void} remove
 */
export function renderMembers(store, conv, remove) {
  const list = $("#member-list");
  list.replaceChildren();
  $("#add-form").hidden = conv.kind !== "group";
  for (const [uid, member] of conv.members || []) {
    const presence = store.presence.get(uid);
    const li = h("li", { "data-user-id": uid, class: "member" },
      h("span", { class: "dot", "data-presence": presence ? presence.status : "unknown", "aria-hidden": "true" }),
      h("span", { text: `${member.username}${uid === store.me.user_id ? " (you)" : ""}` }),
      h("span", { class: "muted", text: ` ${member.role}${presence ? `, ${presence.status === "offline" ? lastSeen(presence.last_seen) : presence.status}` : ""}` }));
    const canRemove = conv.kind === "group" && (conv.role === "owner" ? true : uid === store.me.user_id);
    if (canRemove) {
      const label = uid === store.me.user_id ? "Leave" : `Remove ${member.username}`;
      li.append(" ", h("button", { type: "button", class: "link-button", onclick: () => remove(uid), text: label }));
    }
    list.append(li);
  }
}
