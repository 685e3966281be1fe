// The login / registration screen. Registering asks for an invite when the server says it needs
// one (GET /v1/server), and is not offered when registration is closed.
import { $, setText } from "./dom.js";
import { describe } from "../api.js";

/** @typedef {(action: "login"|"register", username: string, password: string, invite: string) => Promise<void>} Submit */

/** @type {Submit|null} */
let submit = null;
let bound = false;

/** @param {Submit} handler @param {() => Promise<{registration: string}>} server */
export function showLogin(handler, server) {
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
      const invite = /** @type {HTMLInputElement} */ ($("#login-invite")).value.trim();
      setText($("#login-error"), "");
      try {
        await submit(action, username, password, invite);
      } catch (err) {
        setText($("#login-error"), describe(err));
      }
    });
  }
  $("#login-username").focus();
  server().then(({ registration }) => showPolicy(registration), () => showPolicy("unknown"));
}

/** @param {string} registration "invite", "open", "closed" (or "unknown": the server did not say) */
function showPolicy(registration) {
  $("#login-invite-field").hidden = registration !== "invite";
  $("#register-button").hidden = registration === "closed";
  const note = $("#login-note");
  note.hidden = registration !== "closed" && registration !== "invite";
  setText(note, registration === "closed"
    ? "Registration is closed: an admin creates accounts."
    : registration === "invite" ? "To register you need an invite from an admin of this server." : "");
}

export function hideLogin() {
  $("#login").hidden = true;
  /** @type {HTMLInputElement} */ ($("#login-password")).value = "";
  /** @type {HTMLInputElement} */ ($("#login-invite")).value = "";
}
