// The message box and the connection status line: what the person sees before anything is sent.
import { $, setAttr, setText } from "./dom.js";

/** @type {Record<import("../socket.js").LinkState, string>} */
const LINK_TEXT = {
  connecting: "Connecting…",
  online: "Online",
  reconnecting: "Reconnecting…",
  offline: "No network",
  crowded: "Too many connections",
  stopped: "Offline",
};

/** @param {import("../socket.js").LinkState} state @param {any} [detail] the refusal of a crowded connection */
export function renderLink(state, detail) {
  setAttr($("#link"), "data-connection", state);
  setText($("#link"), LINK_TEXT[state]);
  const reason = $("#link-reason");
  const most = detail && detail.limit ? `the most connections allowed (${detail.limit})` : "too many connections";
  setText(reason, state === "crowded" ? `You have ${most} open, in other tabs or on other devices: close one. Trying again…` : "");
  reason.hidden = state !== "crowded";
}

/** Characters as the server counts them (code points). @param {string} text */
const length = (text) => [...text].length;

/** The length against the server's limit (`ready.limits`), shown from 80% of it on.
 * @param {number|null} limit */
export function renderCount(limit) {
  const input = /** @type {HTMLTextAreaElement} */ ($("#composer-input"));
  const count = $("#composer-count");
  const typed = length(input.value);
  const near = limit !== null && typed >= limit * 0.8;
  count.hidden = !near;
  setText(count, near ? `${typed} / ${limit}` : "");
  setAttr(count, "data-over", near && typed > limit ? "true" : null);
  if (limit === null || typed <= limit) setText($("#composer-error"), "");
}

/** Refuse, saying why, a message the server would refuse for its length.
 * @param {string} body @param {number|null} limit @returns {boolean} whether it may be sent */
export function withinLimit(body, limit) {
  const typed = length(body);
  if (limit === null || typed <= limit) return true;
  setText($("#composer-error"), `Too long to send: at most ${limit} characters (this one has ${typed})`);
  return false;
}
