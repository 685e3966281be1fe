// The open conversation: header with presence, messages with day separators and their state
// (pending / saved / read / read by K of N / failed with a retry), the typing line, members.
import { h, setAttr, setText, $, clock, dayKey, dayLabel, lastSeen } from "./dom.js";
import { richText } from "./text.js";

/**
 * @typedef {import("../store.js").Store} Store
 * @typedef {import("../store.js").Conv} Conv
 * @typedef {import("../store.js").ChatEvent} ChatEvent
 * @typedef {import("../store.js").Own} Own
 * @typedef {{retry: (cid: number, cmid: string) => void, readers: (cid: number, seq: number, li: HTMLElement) => void,
 *   edit: (cid: number, seq: number) => void, remove: (cid: number, seq: number) => void,
 *   dismiss: (cid: number, cmid: string) => void,
 *   files: (files: import("../files.js").FileInfo[]) => HTMLElement}} ThreadActions
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
 * @returns {{state: string, text: string, counts?: {read_by: number, delivered_to: number, of: number},
 *   delivered?: number}} `delivered`: to how many (1:1: 1 or 0)
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
    // Saved, then Delivered (a device of theirs got it), then Read; never Delivered after Read.
    if (seq <= conv.peerRead) return { state: "read", text: "Read", delivered: 1 };
    if (seq <= conv.peerDelivered) return { state: "saved", text: "Delivered", delivered: 1 };
    return { state: "saved", text: "Saved", delivered: 0 };
  }
  const counts = conv.receipts.get(seq);
  if (!counts) return { state: "saved", text: "Saved" };
  const text = `Read by ${counts.read_by} of ${counts.of}`;
  // Never fewer delivered than read (a read is a delivery; the server's counts keep it so).
  const delivered = Math.max(counts.delivered_to, counts.read_by);
  return { state: counts.read_by > 0 && counts.read_by >= counts.of ? "read" : "saved", text, counts, delivered };
}

/**
 * Everything a row shows, as plain data: what it is built from, and compared to tell whether
 * it changed.
 * @typedef {{key: string, seq: number|null, at: string, system?: string, mine?: boolean,
 *   sender?: string|number, name?: string, body?: string, state?: string, text?: string,
 *   readBy?: number, readOf?: number, deliveredTo?: number, deliveredText?: string, readers?: boolean,
 *   cmid?: string, edited?: string, deleted?: boolean, canEdit?: boolean, canDelete?: boolean, amend?: string,
 *   names?: string[], me?: string, found?: boolean,
 *   files?: import("../files.js").FileInfo[]}} RowModel
 * @param {Store} store @param {Conv} conv @param {Row} row @returns {RowModel}
 */
function rowModel(store, conv, row) {
  const event = row.event;
  const base = { key: row.key, seq: row.seq, at: row.at, found: row.seq !== null && row.seq === conv.found };
  if (event && event.kind !== "text") {
    const names = event.user_ids.map((uid) => store.name(uid)).join(", ");
    const verb = event.kind === "members_added" ? "added" : "removed";
    return { ...base, system: `${store.name(event.sender_id)} ${verb} ${names}` };
  }
  const mine = row.own !== null || (event && event.sender_id === store.me.user_id);
  const amend = event ? store.amendOf(conv, event.seq) : null;
  const asked = amend && amend.state !== "failed" ? amend : null; // shown before its event is in
  const body = event ? (asked?.kind === "edit" && !event.deleted_at ? asked.body : event.body) : row.own.body;
  const files = (event ? event.attachments : row.own.attachments) || undefined;
  const marks = textMarks(store, conv, event, mine);
  if (asked?.kind === "delete") Object.assign(marks, { canEdit: false, canDelete: false });
  const change = amend ? amendStatus(amend) : {};
  if (!mine) return { ...base, ...marks, ...change, mine, sender: event.sender_id, name: store.name(event.sender_id), body, files };
  // A change on its way, or refused, is what the row says (not its receipts).
  const status = { ...statusOf(store, conv, row), ...(change.state ? { ...change, counts: undefined } : {}) };
  return {
    ...base, ...marks, mine, sender: "me", name: "You", body, state: status.state, text: status.text,
    readBy: status.counts?.read_by, readOf: status.counts?.of, deliveredTo: status.delivered,
    deliveredText: status.counts && status.delivered !== undefined && status.delivered > status.counts.read_by
      ? `delivered to ${status.delivered} of ${status.counts.of}` : undefined,
    readers: Boolean(status.counts && conv.members !== null && conv.member_count <= 100),
    cmid: row.own?.client_msg_id, files, amend: change.amend,
  };
}

/** The state my edit or delete of a message gives it until its event is in.
 * @param {import("../store.js").Amend} amend
 * @returns {{state?: string, text?: string, amend?: string}} amend: a refusal's client_msg_id, to dismiss it */
function amendStatus(amend) {
  if (amend.state === "failed") return { state: "failed", text: amend.error || "Not saved", amend: amend.client_msg_id };
  if (amend.state === "pending") return { state: "pending", text: amend.error || (amend.kind === "edit" ? "Saving edit…" : "Deleting…") };
  return {};
}

/** What a stored text shows besides its body: edited, deleted, its mentions, what I may do.
 * @param {Store} store @param {Conv} conv @param {ChatEvent|null} event @param {boolean} mine */
function textMarks(store, conv, event, mine) {
  if (!event) return {};
  if (event.deleted_at) return { deleted: true };
  const names = conv.members ? [...conv.members.values()].map((m) => m.username.toLowerCase()).sort() : [];
  const window = store.editWindowS;
  const age = (Date.now() - Date.parse(event.created_at)) / 1000;
  return {
    edited: event.edited_at, names, me: store.me.username,
    canEdit: mine && (window === null || age < window),
    canDelete: mine || (conv.kind === "group" && conv.role === "owner"),
  };
}

/** The message's menu: Edit, and Delete with a confirmation.
 * @param {Conv} conv @param {RowModel} m @param {ThreadActions} actions */
function messageMenu(conv, m, actions) {
  const menu = h("div", { class: "menu", hidden: true });
  const toggle = h("button", { type: "button", class: "link-button menu-button", "aria-expanded": "false",
    "aria-label": "Message actions", text: "⋯" });
  const fill = () => {
    menu.replaceChildren();
    if (m.canEdit) {
      menu.append(h("button", { type: "button", class: "link-button edit-button", text: "Edit",
        onclick: () => { close(); actions.edit(conv.id, m.seq); } }));
    }
    menu.append(h("button", { type: "button", class: "link-button delete-button", text: "Delete",
      onclick: () => menu.replaceChildren(
        h("span", { text: "Delete this message? " }),
        h("button", { type: "button", class: "link-button confirm-delete", text: "Delete",
          onclick: () => { close(); actions.remove(conv.id, m.seq); } }), " ",
        h("button", { type: "button", class: "link-button", text: "Cancel", onclick: () => close() }),
      ) }));
  };
  const close = () => {
    menu.hidden = true;
    toggle.setAttribute("aria-expanded", "false");
  };
  toggle.addEventListener("click", () => {
    if (!menu.hidden) return close();
    fill();
    menu.hidden = false;
    toggle.setAttribute("aria-expanded", "true");
  });
  return h("span", { class: "actions" }, toggle, menu);
}

/** @param {Conv} conv @param {RowModel} m @param {ThreadActions} actions */
function messageRow(conv, m, actions) {
  if (m.system !== undefined) {
    return h("li", { class: "message system", "data-key": m.key, "data-seq": m.seq, "data-at": m.at }, m.system);
  }
  const li = h(
    "li",
    {
      class: `message ${m.mine ? "mine" : "theirs"}${m.found ? " found" : ""}`,
      tabindex: m.found ? "-1" : undefined,
      "data-key": m.key,
      "data-seq": m.seq ?? undefined,
      "data-at": m.at,
      "data-sender": m.sender,
      "data-state": m.state,
      "data-read-by": m.readBy,
      "data-read-of": m.readOf,
      "data-deleted": m.deleted ? "true" : undefined,
      "data-edited": m.edited ? "true" : undefined,
      "data-delivered": m.deliveredTo,
    },
    h("span", { class: "meta" }, h("span", { class: "sender", text: m.name }), " ",
      h("time", { datetime: m.at, text: clock(m.at) }),
      m.edited ? h("span", { class: "edited muted", title: `Edited ${clock(m.edited)}`, text: " (edited)" }) : null),
    m.deleted
      ? h("p", { class: "body tombstone muted", text: "Message deleted" })
      : m.body ? h("p", { class: "body" }, ...richText(m.body, new Set(m.names || []), m.me || "")) : null,
  );
  if (m.files?.length && !m.deleted) li.append(actions.files(m.files));
  if (m.seq !== null && !m.deleted && (m.canEdit || m.canDelete)) li.append(messageMenu(conv, m, actions));
  if (m.mine || m.state) {
    const line = h("span", { class: "status", role: m.state === "failed" ? "alert" : undefined });
    if (m.readers) {
      line.append(h("button", { type: "button", class: "link-button readers-button", "aria-expanded": "false",
        onclick: () => actions.readers(conv.id, m.seq, li), text: m.text }));
    } else {
      line.append(m.text);
    }
    if (m.state === "failed" && m.amend) {
      line.append(" ", h("button", { type: "button", class: "link-button dismiss",
        onclick: () => actions.dismiss(conv.id, m.amend), text: "Dismiss" }));
    } else if (m.state === "failed") {
      line.append(" ", h("button", { type: "button", class: "link-button retry",
        onclick: () => actions.retry(conv.id, m.cmid), text: "Retry" }));
    }
    li.append(line);
    if (m.deliveredText) li.append(h("span", { class: "delivered muted", text: ` · ${m.deliveredText}` }));
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
