// The sidebar: conversations by latest activity, each with its last message, unread badge and
// (1:1) the peer's presence dot. Items are updated in place, so a badge only changes when its
// number does.
import { h, setAttr, setText, $ } from "./dom.js";

/** @typedef {import("../store.js").Store} Store @typedef {import("../store.js").Conv} Conv */

/** @param {Store} store @param {Conv} conv */
function preview(store, conv) {
  const unsent = store.unsent(conv);
  if (unsent) return `${unsent.state === "failed" ? "Not sent" : "You"}: ${unsent.body}`;
  const event = conv.lastEvent;
  if (!event) return "No messages yet";
  if (event.kind !== "text") return event.kind === "members_added" ? "Members added" : "Members removed";
  const who = event.sender_id === store.me.user_id ? "You" : store.name(event.sender_id);
  // My edit or delete of it not stored yet (offline, say) shows here as on its row.
  const pending = store.pendingAmend(conv, event.seq);
  if (event.deleted_at || pending?.kind === "delete") return `${who}: message deleted`;
  return `${who}: ${pending?.kind === "edit" ? pending.body : event.body}`;
}

/** @param {Conv} conv */
function item(conv) {
  return h(
    "li",
    { "data-conversation-id": conv.id, class: "conversation" },
    h(
      "button",
      { type: "button", class: "conversation-button" },
      h("span", { class: "dot", "data-presence": "unknown", "aria-hidden": "true" }),
      h("span", { class: "conversation-title" }),
      // Read out, not shown: the button's name is its text, so it holds everything visible
      // (axe: label-content-name-mismatch) and these words besides.
      h("span", { class: "presence-text visually-hidden" }),
      h("span", { class: "badge", "data-unread": "0", hidden: true }),
      h("span", { class: "mention-text visually-hidden" }),
      h("span", { class: "unread-text visually-hidden" }),
      h("span", { class: "muted-text visually-hidden" }),
      h("span", { class: "preview muted" }),
    ),
  );
}

/** A click on an item opens its conversation (bound once on the list, controls.js). @param {Store} store */
export function renderList(store) {
  const list = $("#conversations");
  const ordered = store.ordered();
  /** @type {Map<string, HTMLElement>} */
  const existing = new Map();
  for (const li of /** @type {NodeListOf<HTMLElement>} */ (list.querySelectorAll("li[data-conversation-id]"))) {
    existing.set(li.dataset.conversationId, li);
  }
  /** @type {Element|null} */
  let previous = null;
  for (const conv of ordered) {
    let li = existing.get(String(conv.id));
    existing.delete(String(conv.id));
    if (!li) li = item(conv);
    const wanted = previous ? previous.nextElementSibling : list.firstElementChild;
    if (wanted !== li) list.insertBefore(li, wanted);
    previous = li;
    updateItem(store, conv, li);
  }
  for (const stale of existing.values()) stale.remove();
}

/** @param {Store} store @param {Conv} conv @param {HTMLElement} li */
function updateItem(store, conv, li) {
  const title = store.title(conv);
  const gone = conv.kind === "direct" && conv.peer !== null && store.deactivated.has(conv.peer);
  setText($(".conversation-title", li), gone ? `${title} (deactivated)` : title);
  setText($(".preview", li), preview(store, conv));
  const badge = $(".badge", li);
  const unread = conv.unread >= 1000 ? "999+" : String(conv.unread);
  setAttr(badge, "data-unread", String(conv.unread));
  setText(badge, unread);
  setAttr(badge, "hidden", conv.unread > 0 ? null : "");
  // A mention of me among the unread makes the badge stand out (counted by this app, §4.11).
  const mentioned = conv.unread > 0 && conv.mentions > 0;
  setAttr(badge, "data-mentions", mentioned ? String(conv.mentions) : null);
  setText($(".mention-text", li), mentioned ? ` ${conv.mentions === 1 ? "mention" : "mentions"} of you, ` : "");
  setText($(".unread-text", li), conv.unread > 0 ? " unread, " : "");
  setAttr(li, "aria-current", store.openId === conv.id ? "true" : null);
  const muted = store.notify.muted.has(conv.id);
  setAttr(li, "data-muted", muted ? "true" : null);
  setText($(".muted-text", li), muted ? "muted, " : "");
  const dot = $(".dot", li);
  const peer = conv.kind === "direct" && conv.peer !== null ? store.presence.get(conv.peer) : null;
  setAttr(dot, "data-presence", peer ? peer.status : conv.kind === "group" ? "group" : "unknown");
  setText($(".presence-text", li), peer ? `, ${peer.status}, ` : ", ");
}
