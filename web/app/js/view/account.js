// The account screen (docs/protocol.md §3, /v1/me/...): display name, password, and the devices
// logged in as this user, each of which can be logged out.
import { $, h, setText } from "./dom.js";
import { describe } from "../api.js";
import { showPanel } from "./panels.js";

/**
 * @typedef {import("../api.js").Api} Api
 * @typedef {{id: number, created_at: string, last_used_at: string, user_agent: string, address: string,
 *   current: boolean}} Device
 * @typedef {{me: () => {display_name?: string|null}, renamed: (name: string|null) => void}} AccountHooks
 */

/** @type {Api} */
let api = null;
/** @type {AccountHooks} */
let hooks = null;

/** "2026-11-24 15:06", in the reader's time zone. @param {string} iso */
export function when(iso) {
  const d = new Date(iso);
  const pad = (/** @type {number} */ n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** @param {string} text */
function status(text) {
  setText($("#account-error"), "");
  setText($("#account-status"), text);
}

/** @param {string} form @param {() => Promise<void>} handler */
function onSubmit(form, handler) {
  $(form).addEventListener("submit", async (event) => {
    event.preventDefault();
    setText($("#account-status"), "");
    setText($("#account-error"), "");
    try {
      await handler();
    } catch (err) {
      setText($("#account-error"), describe(err));
    }
  });
}

/** @param {Api} client @param {AccountHooks} accountHooks */
export function bindAccount(client, accountHooks) {
  api = client;
  hooks = accountHooks;
  onSubmit("#name-form", async () => {
    const input = /** @type {HTMLInputElement} */ ($("#display-name"));
    const { display_name } = await api.setDisplayName(input.value.trim() || null);
    input.value = display_name || "";
    hooks.renamed(display_name);
    status(display_name ? `Others now see you as ${display_name}` : "Others now see your username");
  });
  onSubmit("#password-form", async () => {
    const current = /** @type {HTMLInputElement} */ ($("#current-password"));
    const next = /** @type {HTMLInputElement} */ ($("#new-password"));
    const { revoked_sessions } = await api.changePassword(current.value, next.value);
    current.value = "";
    next.value = "";
    status(`Password changed; ${revoked_sessions} other ${revoked_sessions === 1 ? "device was" : "devices were"} logged out`);
    await loadDevices();
  });
}

export async function openAccount() {
  /** @type {HTMLInputElement} */ ($("#display-name")).value = hooks.me().display_name || "";
  setText($("#account-status"), "");
  setText($("#account-error"), "");
  showPanel("account");
  try {
    await loadDevices();
  } catch (err) {
    setText($("#account-error"), describe(err));
  }
}

async function loadDevices() {
  /** @type {{sessions: Device[]}} */
  const { sessions } = await api.sessions();
  const list = $("#devices");
  list.replaceChildren(...sessions.map(device));
}

/** @param {Device} d */
function device(d) {
  const name = d.user_agent || "Unknown device";
  const li = h("li", { class: "row-item", "data-session-id": d.id },
    h("span", { class: "grow" },
      h("strong", { class: "agent", text: name }),
      d.current ? h("span", { class: "tag", text: " this device" }) : null,
      h("br"),
      h("span", { class: "muted", text: `From ${d.address || "?"}, logged in ${when(d.created_at)}, last used ${when(d.last_used_at)}` })));
  if (!d.current) {
    li.append(h("button", {
      type: "button", class: "secondary", text: "Log out",
      "aria-label": `Log out ${name}, logged in ${when(d.created_at)}`,
      onclick: async () => {
        try {
          await api.revokeSession(d.id);
          status(`Logged out ${name}`);
          await loadDevices();
        } catch (err) {
          setText($("#account-error"), describe(err));
        }
      },
    }));
  }
  return li;
}
