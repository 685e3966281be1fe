// The login / registration screen.
import { $, setText } from "./dom.js";
import { describe } from "../api.js";

/** @type {((action: "login"|"register", username: string, password: string) => Promise<void>)|null} */
let submit = null;
let bound = false;

/** @param {(action: "login"|"register", username: string, password: string) => Promise<void>} handler */
export function showLogin(handler) {
  submit = handler;
  $("#login").hidden = false;
  if (!bound) {
    bound = true;
    const form = /** @type {HTMLFormElement} */ ($("#login-form"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = /** @type {HTMLButtonElement|null} */ (/** @type {SubmitEvent} */ (event).submitter);
      const action = button && button.value === "register" ? "register" : "login";
      const username = /** @type {HTMLInputElement} */ ($("#login-username")).value;
      const password = /** @type {HTMLInputElement} */ ($("#login-password")).value;
      setText($("#login-error"), "");
      try {
        await submit(action, username, password);
      } catch (err) {
        setText($("#login-error"), describe(err));
      }
    });
  }
  $("#login-username").focus();
}

export function hideLogin() {
  $("#login").hidden = true;
  /** @type {HTMLInputElement} */ ($("#login-password")).value = "";
}
