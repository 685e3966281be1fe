// What the app's modules share while it runs: the API client, the store of what this session
// knows, its WebSocket session, and the objects that live as long as the page. `store`,
// `socket` and `desktop` are replaced when a session starts or ends (read them where used,
// never keep a copy).
import { Api, describe } from "./api.js";
import { Store } from "./store.js";
import { Activity } from "./activity.js";
import { Push } from "./notify.js";
import { Attachments } from "./view/attachments.js";
import { Mentions } from "./editing.js";

export const api = new Api("");
/** @type {Store} */
export let store = new Store();
/** @type {import("./socket.js").Socket|null} */
export let socket = null;
/** @type {import("./notify.js").Desktop|null} */
export let desktop = null;
export const mentionBox = new Mentions(store);
export const activity = new Activity((idle) => socket?.raw({ type: "presence", status: idle ? "idle" : "active" }));
export const push = new Push(api);
export const attachments = new Attachments(() => api.token);

/** @param {Store} next */
export function setStore(next) {
  store = next;
}

/** @param {import("./socket.js").Socket|null} next */
export function setSocket(next) {
  socket = next;
}

/** @param {import("./notify.js").Desktop|null} next */
export function setDesktop(next) {
  desktop = next;
}

/** Background loads: a failure leaves what is shown (the next event or reconnect refreshes it).
 * @param {Promise<unknown>} promise */
export function quietly(promise) {
  promise.catch((err) => console.warn("chatd:", describe(err)));
}
