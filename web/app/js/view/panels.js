// The account and admin screens take the conversation's place (on a phone, the whole screen
// below the bar, with Back); opening a conversation or Back puts the conversation back.
import { $ } from "./dom.js";

/** @returns {string|null} the open panel's id */
export function openPanel() {
  const open = /** @type {HTMLElement|null} */ (document.querySelector(".panel:not([hidden])"));
  return open ? open.id : null;
}

/** @param {string} id "account" or "admin" */
export function showPanel(id) {
  for (const panel of /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll(".panel"))) {
    panel.hidden = panel.id !== id;
  }
  $("#thread").hidden = true;
  document.body.dataset.view = "panel";
  $(`#${id}-title`).focus(); // screen readers start at the screen's heading
}

/** @param {boolean} [toList] show the list again on a phone (not when a conversation opens) */
export function hidePanels(toList = true) {
  if (openPanel() === null) return;
  for (const panel of /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll(".panel"))) panel.hidden = true;
  $("#thread").hidden = false;
  if (toList) document.body.dataset.view = "list";
}
