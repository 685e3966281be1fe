// Keeping the views in step with the store: the conversation list and badge, the open
// conversation's rows, presence, the notification settings, and what a message row's buttons do.
import { describe } from "./api.js";
import { $, setAttr, setText } from "./view/dom.js";
import { renderList } from "./view/list.js";
import { renderHead, renderMembers, renderMessages, showReaders } from "./view/thread.js";
import { renderBadge } from "./notify.js";
import { Editing } from "./editing.js";
import { api, attachments, socket, store } from "./state.js";

/** @typedef {import("./store.js").Conv} Conv */

// A change's state shows on its row and, for the last message, in the sidebar's preview.
export const editing = new Editing(store, (entry) => socket?.send(entry), (conv) => {
  refreshRows(conv);
  refreshList();
});

export function refreshList() {
  renderList(store);
  renderBadge(store);
}

/** The open conversation's rows that changed. @param {Conv} conv */
export function refreshRows(conv) {
  if (store.openId === conv.id) renderMessages(store, conv, threadActions);
}

export function refreshPresence() {
  refreshList();
  if (store.openId === null) return;
  const conv = store.convs.get(store.openId);
  renderHead(store, conv);
  if (!$("#members").hidden) renderMembers(store, conv, removeMember);
}

export function renderAlerts() {
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

/** @type {import("./view/thread.js").ThreadActions} */
export const threadActions = {
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
export async function removeMember(uid) {
  try {
    await api.removeMember(store.openId, uid);
  } catch (err) {
    setText($("#members-error"), describe(err));
  }
}
