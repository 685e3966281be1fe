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
function keyOf(store, event) {
  return event.sender_id === store.me.user_id && event.client_msg_id ? `c:${event.client_msg_id}` : `s:${event.seq}`;
}

/** What each row was built from: a row is rebuilt only when this changes.
 * @type {WeakMap<Element, string>} */
const builtFrom = new WeakMap();

/**
 * Bring the list in step with the conversation, touching only what changed: rows already shown
 * stay the same DOM nodes (an older page adds its rows above them; an ack, a receipt or a read
 * rebuilds just the rows it changes), so the cost of an update does not grow with the history.
 * @param {Store} store @param {Conv} conv @param {ThreadActions} actions
 */
export function renderMessages(store, conv, actions) {
  const list = $("#messages");
  /** @type {Map<string, HTMLElement>} */
  const shown = new Map();
  for (const li of /** @type {HTMLCollectionOf<HTMLElement>} */ (list.children)) shown.set(li.dataset.key, li);
  /** @type {Element|null} */
  let previous = null;
  /** @param {string} key @param {string} from @param {() => HTMLElement} build */
  const place = (key, from, build) => {
    let li = shown.get(key);
    shown.delete(key);
    if (!li || builtFrom.get(li) !== from) {
      li?.remove();
      li = build();
      builtFrom.set(li, from);
    }
    const wanted = previous ? previous.nextElementSibling : list.firstElementChild;
    if (wanted !== li) list.insertBefore(li, wanted);
    previous = li;
  };
  let day = null;
  for (const row of rowsOf(store, conv)) {
    const key = dayKey(row.at);
    if (key !== day) {
      const label = dayLabel(row.at);
      place(`d:${key}`, label, () => h("li", { class: "day", "data-key": `d:${key}`, text: label }));
      day = key;
    }
    const model = rowModel(store, conv, row);
    place(row.key, JSON.stringify(model), () => messageRow(conv, model, actions));
  }
  for (const stale of shown.values()) stale.remove();
  $("#older").hidden = conv.complete;
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

/**
 * Everything a row shows, as plain data: what it is built from, and compared to tell whether
 * it changed.
 * @typedef {{key: string, seq: number|null, at: string, system?: string, mine?: boolean,
 *   sender?: string|number, name?: string, body?: string, state?: string, text?: string,
 *   readBy?: number, readOf?: number, readers?: boolean, cmid?: string}} RowModel
 * @param {Store} store @param {Conv} conv @param {Row} row @returns {RowModel}
 */
function rowModel(store, conv, row) {
  const event = row.event;
  const base = { key: row.key, seq: row.seq, at: row.at };
  if (event && event.kind !== "text") {
    const names = event.user_ids.map((uid) => store.name(uid)).join(", ");
    const verb = event.kind === "members_added" ? "added" : "removed";
    return { ...base, system: `${store.name(event.sender_id)} ${verb} ${names}` };
  }
  const mine = row.own !== null || (event && event.sender_id === store.me.user_id);
  const body = event ? event.body : row.own.body;
  if (!mine) return { ...base, mine, sender: event.sender_id, name: store.name(event.sender_id), body };
  const status = statusOf(store, conv, row);
  return {
    ...base, mine, sender: "me", name: "You", body, state: status.state, text: status.text,
    readBy: status.counts?.read_by, readOf: status.counts?.of,
    readers: Boolean(status.counts && conv.members !== null && conv.member_count <= 100),
    cmid: row.own?.client_msg_id,
  };
}

/** @param {Conv} conv @param {RowModel} m @param {ThreadActions} actions */
function messageRow(conv, m, actions) {
  if (m.system !== undefined) {
    return h("li", { class: "message system", "data-key": m.key, "data-seq": m.seq, "data-at": m.at }, m.system);
  }
  const li = h(
    "li",
    {
      class: `message ${m.mine ? "mine" : "theirs"}`,
      "data-key": m.key,
      "data-seq": m.seq ?? undefined,
      "data-at": m.at,
      "data-sender": m.sender,
      "data-state": m.state,
      "data-read-by": m.readBy,
      "data-read-of": m.readOf,
    },
    h("span", { class: "meta" }, h("span", { class: "sender", text: m.name }), " ",
      h("time", { datetime: m.at, text: clock(m.at) })),
    h("p", { class: "body", text: m.body }),
  );
  if (m.mine) {
    const line = h("span", { class: "status", role: m.state === "failed" ? "alert" : undefined });
    if (m.readers) {
      line.append(h("button", { type: "button", class: "link-button readers-button", "aria-expanded": "false",
        onclick: () => actions.readers(conv.id, m.seq, li), text: m.text }));
    } else {
      line.append(m.text);
    }
    if (m.state === "failed") {
      line.append(" ", h("button", { type: "button", class: "link-button retry",
        onclick: () => actions.retry(conv.id, m.cmid), text: "Retry" }));
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
  if (conv.kind === "direct" && conv.peer !== null && store.deactivated.has(conv.peer)) {
    setAttr(dot, "data-presence", "offline");
    setText(status, "deactivated");
  } else if (conv.kind === "direct" && conv.peer !== null) {
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
      h("span", { text: `${store.name(uid)}${store.name(uid) !== member.username ? ` (${member.username})` : ""}${uid === store.me.user_id ? " (you)" : ""}` }),
      store.deactivated.has(uid) ? h("span", { class: "deactivated", text: " deactivated" }) : null,
      h("span", { class: "muted", text: ` ${member.role}${presence ? `, ${presence.status === "offline" ? lastSeen(presence.last_seen) : presence.status}` : ""}` }));
    const canRemove = conv.kind === "group" && (conv.role === "owner" ? true : uid === store.me.user_id);
    if (canRemove) {
      const label = uid === store.me.user_id ? "Leave" : `Remove ${member.username}`;
      li.append(" ", h("button", { type: "button", class: "link-button", onclick: () => remove(uid), text: label }));
    }
    list.append(li);
  }
}
