// The admin screen (docs/protocol.md §3, /v1/admin/...): invites (made, listed, revoked) and
// users (made, deactivated and reactivated, given a new password, made admin or not).
import { $, h, setText } from "./dom.js";
import { describe } from "../api.js";
import { showPanel } from "./panels.js";
import { when } from "./account.js";

/**
 * @typedef {import("../api.js").Api} Api
 * @typedef {{id: number, created_by_username: string|null, created_at: string, expires_at: string,
 *   max_uses: number, uses: number, note: string, state: string}} Invite
 * @typedef {{user_id: number, username: string, display_name: string|null, admin: boolean,
 *   deactivated: boolean, created_at: string}} AdminUser
 */

const DAY_S = 86400;
/** @type {Api} */
let api = null;
/** @type {() => number} */
let myId = () => 0;
/** @type {(user: AdminUser) => void} */
let changed = () => {};

/** @param {string} text */
function status(text) {
  setText($("#admin-error"), "");
  setText($("#admin-status"), text);
}

/** Run an admin action: its result said in the status line, a refusal in the error line.
 * @param {() => Promise<string>} action */
async function act(action) {
  setText($("#admin-status"), "");
  setText($("#admin-error"), "");
  try {
    status(await action());
  } catch (err) {
    setText($("#admin-error"), describe(err));
  }
}

/** @param {string} id @returns {HTMLInputElement} */
const input = (id) => /** @type {HTMLInputElement} */ ($(id));

/** @param {Api} client @param {() => number} me the admin's own user id
 * @param {(user: AdminUser) => void} userChanged a user deactivated or reactivated here */
export function bindAdmin(client, me, userChanged) {
  api = client;
  myId = me;
  changed = userChanged;
  $("#invite-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(async () => {
      const { token } = await api.createInvite({
        max_uses: Number(input("#invite-uses").value),
        expires_in_s: Number(input("#invite-days").value) * DAY_S,
        note: input("#invite-note").value,
      });
      input("#invite-token").value = token;
      $("#invite-new").hidden = false;
      input("#invite-note").value = "";
      await loadInvites();
      return "Invite created: give it to the person (it is shown only now)";
    });
  });
  $("#user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(async () => {
      const user = await api.createUser(input("#new-username").value, input("#new-user-password").value,
        input("#new-user-admin").checked);
      input("#new-username").value = "";
      input("#new-user-password").value = "";
      input("#new-user-admin").checked = false;
      await loadUsers();
      return `Created ${user.username}${user.admin ? ", an admin" : ""}`;
    });
  });
}

export async function openAdmin() {
  $("#invite-new").hidden = true;
  input("#invite-token").value = "";
  setText($("#admin-status"), "");
  setText($("#admin-error"), "");
  showPanel("admin");
  await act(async () => {
    await Promise.all([loadInvites(), loadUsers()]);
    return "";
  });
}

async function loadInvites() {
  /** @type {{invites: Invite[]}} */
  const { invites } = await api.invites();
  $("#invites").replaceChildren(...invites.map(invite));
}

/** @param {Invite} i */
function invite(i) {
  const what = `Invite ${i.id}${i.note ? ` (${i.note})` : ""}`;
  const li = h("li", { class: "row-item", "data-invite-id": i.id, "data-state": i.state },
    h("span", { class: "grow" },
      h("strong", { text: what }), " ", h("span", { class: "tag", text: i.state.replace("_", " ") }), h("br"),
      h("span", { class: "muted", text: `${i.uses} of ${i.max_uses} used, expires ${when(i.expires_at)}, by ${i.created_by_username || "?"}` })));
  if (i.state === "active") {
    li.append(h("button", { type: "button", class: "secondary", text: "Revoke", "aria-label": `Revoke ${what}`,
      onclick: () => act(async () => {
        await api.revokeInvite(i.id);
        await loadInvites();
        return `${what} revoked`;
      }) }));
  }
  return li;
}

async function loadUsers() {
  /** @type {{users: AdminUser[]}} */
  const { users } = await api.users();
  $("#users").replaceChildren(...users.map(user));
}

/** @param {AdminUser} u */
function user(u) {
  const name = u.display_name ? `${u.display_name} (${u.username})` : u.username;
  const tags = [u.admin ? "admin" : "", u.deactivated ? "deactivated" : "", u.user_id === myId() ? "you" : ""].filter(Boolean);
  /** @param {string} text @param {string} label @param {() => Promise<string>} action */
  const button = (text, label, action) => h("button", { type: "button", class: "secondary", text, "aria-label": label,
    onclick: () => act(async () => {
      const said = await action();
      await loadUsers();
      return said;
    }) });
  const actions = h("span", { class: "actions" });
  if (u.user_id !== myId()) {
    actions.append(u.deactivated
      ? button("Reactivate", `Reactivate ${u.username}`, async () => {
        changed((await api.setDeactivated(u.user_id, false)).user);
        return `${u.username} can log in again`;
      })
      : button("Deactivate", `Deactivate ${u.username}`, async () => {
        const { user: now, revoked_sessions } = await api.setDeactivated(u.user_id, true);
        changed(now);
        return `${u.username} is deactivated and was logged out of ${revoked_sessions} ${revoked_sessions === 1 ? "device" : "devices"}`;
      }));
  }
  actions.append(u.admin
    ? button("Drop admin", `Drop admin from ${u.username}`, async () => {
      await api.setAdmin(u.user_id, false);
      return `${u.username} is no longer an admin`;
    })
    : button("Make admin", `Make ${u.username} an admin`, async () => {
      await api.setAdmin(u.user_id, true);
      return `${u.username} is an admin`;
    }));
  const reset = h("form", { class: "row reset", hidden: true });
  const field = `reset-${u.user_id}`;
  const password = /** @type {HTMLInputElement} */ (h("input", { id: field, type: "password", autocomplete: "new-password", minlength: 8, required: true }));
  reset.append(h("label", { for: field, text: `New password for ${u.username}` }), password, h("button", { type: "submit", text: "Set" }));
  reset.addEventListener("submit", (event) => {
    event.preventDefault();
    act(async () => {
      const { revoked_sessions } = await api.resetPassword(u.user_id, password.value);
      await loadUsers();
      return `${u.username} has a new password and was logged out of ${revoked_sessions} ${revoked_sessions === 1 ? "device" : "devices"}`;
    });
  });
  actions.append(h("button", { type: "button", class: "secondary", text: "Reset password", "aria-label": `Reset password of ${u.username}`,
    onclick: () => {
      reset.hidden = !reset.hidden;
      if (!reset.hidden) password.focus();
    } }));
  return h("li", { class: "row-item wrap", "data-user-id": u.user_id, "data-deactivated": String(u.deactivated), "data-admin": String(u.admin) },
    h("span", { class: "grow" }, h("strong", { text: name }), tags.length ? h("span", { class: "tag", text: ` ${tags.join(", ")}` }) : null),
    actions, reset);
}
