// Telling a person about new messages (docs/protocol.md §12): the unread count in the tab's
// title and favicon, desktop notifications while the tab is hidden or unfocused, and Web Push
// (a service worker, /web/sw.js) for when no tab is open.

/** @typedef {import("./store.js").Store} Store @typedef {import("./store.js").Conv} Conv
 * @typedef {import("./store.js").ChatEvent} ChatEvent @typedef {import("./api.js").Api} Api */

const TITLE = "chatd";
const ICONS = { none: "/web/icon.svg", unread: "/web/icon-unread.svg", mention: "/web/icon-mention.svg" };

/** The tag that collapses a conversation's notifications (the service worker uses it too).
 * @param {number} cid */
export const tagFor = (cid) => `chatd-c-${cid}`;

/**
 * Title "(3) chatd" ("(3 · &#64;1) chatd" when one is a mention), and a favicon with a dot. Muted
 * conversations do not count. Mentions are counted by `mentions(conv)`: 0 until the server
 * has them (a later issue); the title and icon mark them already.
 * @param {Store} store
 * @param {(conv: Conv) => number} [mentions]
 */
export function renderBadge(store, mentions = () => 0) {
  let unread = 0;
  let mentioned = 0;
  for (const conv of store.convs.values()) {
    if (store.notify.muted.has(conv.id)) continue;
    unread += conv.unread;
    mentioned += mentions(conv);
  }
  const count = unread >= 1000 ? "999+" : String(unread);
  const title = unread === 0 ? TITLE : mentioned > 0 ? `(${count} · @${mentioned}) ${TITLE}` : `(${count}) ${TITLE}`;
  if (document.title !== title) document.title = title;
  const icon = /** @type {HTMLLinkElement|null} */ (document.querySelector("link[rel='icon']"));
  const href = mentioned > 0 ? ICONS.mention : unread > 0 ? ICONS.unread : ICONS.none;
  if (icon && icon.getAttribute("href") !== href) icon.setAttribute("href", href);
}

/** Whether the person is looking at this tab. */
export function looking() {
  return document.visibilityState === "visible" && document.hasFocus();
}

/** Desktop notifications for one tab: one per conversation (later ones replace it), none for
 * muted conversations, in do-not-disturb, for my own messages (from any device), or while I am
 * looking at the tab. */
export class Desktop {
  /** @param {Store} store @param {(cid: number) => void} open */
  constructor(store, open) {
    this.store = store;
    this.open = open;
    /** @type {Map<number, {note: Notification, count: number}>} */
    this.shown = new Map();
  }

  /** @param {ChatEvent} event */
  message(event) {
    const { store } = this;
    if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
    if (event.kind !== "text" || event.sender_id === store.me.user_id) return;
    if (store.notify.dnd || store.notify.muted.has(event.conversation_id) || looking()) return;
    const conv = store.convs.get(event.conversation_id);
    if (!conv) return;
    const cid = conv.id;
    const count = (this.shown.get(cid)?.count || 0) + 1;
    const sender = store.name(event.sender_id);
    const where = conv.kind === "group" ? ` in ${store.title(conv)}` : "";
    // The message text only if the person chose previews (the same choice as for pushes).
    const body = store.notify.push_preview
      ? event.body
      : count > 1 ? `${count} new messages` : `New message from ${sender}`;
    const title = store.notify.push_preview ? `${sender}${where}` : TITLE;
    const note = new Notification(title, { body, tag: tagFor(cid), icon: "/web/icon.svg" });
    note.onclick = () => {
      window.focus();
      this.open(cid);
      note.close();
    };
    this.shown.get(cid)?.note.close();
    this.shown.set(cid, { note, count });
  }

  /** The conversation is on screen: its notification has done its job. @param {number} cid */
  seen(cid) {
    const held = this.shown.get(cid);
    if (!held) return;
    held.note.close();
    this.shown.delete(cid);
  }
}

/** "BASE64URL" -> bytes, for applicationServerKey. @param {string} text */
function bytes(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

/** @param {ArrayBuffer|null} had @param {Uint8Array} key */
function sameKey(had, key) {
  if (!had || had.byteLength !== key.length) return false;
  const view = new Uint8Array(had);
  return view.every((b, i) => b === key[i]);
}

/** The service worker and this device's push subscription. */
export class Push {
  /** @param {Api} api */
  constructor(api) {
    this.api = api;
    /** @type {Promise<ServiceWorkerRegistration>|null} */
    this.registration = null;
  }

  get supported() {
    return "serviceWorker" in navigator && "PushManager" in window && typeof Notification !== "undefined";
  }

  /** Register the worker (scope `/`: nginx allows it). */
  register() {
    if (!this.supported) return null;
    this.registration ??= navigator.serviceWorker
      .register("/web/sw.js", { scope: "/" })
      .then(() => navigator.serviceWorker.ready);
    return this.registration;
  }

  /** After permission: subscribe (or take this browser's subscription) and tell the server,
   * which ties it to this login. Throws ApiError `push_disabled` on a server without a key. */
  async subscribe() {
    const registration = await this.register();
    if (!registration || Notification.permission !== "granted") return false;
    const { public_key } = await this.api.call("GET", "/v1/push/key");
    const key = bytes(public_key);
    let subscription = await registration.pushManager.getSubscription();
    if (subscription && !sameKey(subscription.options.applicationServerKey, key)) {
      await subscription.unsubscribe(); // made for a VAPID key the server no longer has
      subscription = null;
    }
    if (!subscription) {
      subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    }
    const { endpoint, keys } = subscription.toJSON();
    await this.api.call("POST", "/v1/push/subscriptions", { endpoint, keys });
    return true;
  }

  /** On logout: this browser stops receiving pushes (the server forgets it with the token). */
  async unsubscribe() {
    if (!this.registration) return;
    const subscription = await (await this.registration).pushManager.getSubscription();
    await subscription?.unsubscribe();
  }
}
