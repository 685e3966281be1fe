// HTTP client for /v1/ (docs/protocol.md §3). Every call returns parsed JSON or throws ApiError.

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0 when the network failed)
   * @param {string} code chatd's error code (§5), or "network" / "http_<status>"
   * @param {string} message
   * @param {Record<string, any>} [data] the whole error object (retry_after_ms, usernames, ...)
   */
  constructor(status, code, message, data = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.data = data;
  }
}

/** What an error answering a send means to a person (§5), shown under the message.
 * @type {Record<string, string>} */
export const ERROR_TEXT = {
  rate_limited: "Too many messages; it will be sent shortly",
  message_too_long: "Too long to send",
  not_member: "You are not a member of this conversation",
  client_msg_id_conflict: "Could not send (duplicate id)",
  bad_request: "The server refused this message",
  unavailable: "The server is busy; retrying",
  shutting_down: "The server is restarting; retrying",
  internal: "Server error; retrying",
};

/** The same for HTTP requests; any other code shows the server's own message (a `bad_request`
 * says which field is wrong and why).
 * @type {Record<string, string>} */
const REQUEST_TEXT = {
  not_member: "You are not a member of this conversation",
  unavailable: "The server is busy; try again",
  internal: "Server error; try again",
  user_not_found: "No such user",
  username_taken: "That username is taken",
  invalid_credentials: "Wrong username or password",
  invite_required: "Registering here needs an invite from an admin",
  invalid_invite: "That invite is not valid: unknown, expired, used up or revoked",
  registration_closed: "Registration is closed here; an admin creates accounts",
  account_deactivated: "This account is deactivated; ask an admin",
  wrong_password: "The current password is wrong",
  last_admin: "The last admin cannot stop being one; make another admin first",
  cannot_deactivate_self: "You cannot deactivate yourself",
  group_too_large: "Who read it is not kept for groups this large",
  network: "Cannot reach the server",
};

/** @param {ApiError|Error} err */
export function describe(err) {
  if (err instanceof ApiError) {
    if (err.code === "rate_limited") {
      const seconds = Math.max(1, Math.ceil((err.data.retry_after_ms || 1000) / 1000));
      return `Too many attempts; try again in ${seconds} s`;
    }
    if (err.code.startsWith("http_")) return `The server answered ${err.status}; try again`; // not chatd's own answer (§1)
    const text = REQUEST_TEXT[err.code] || sentence(err.message) || err.code;
    const names = err.data.usernames ? `: ${err.data.usernames.join(", ")}` : "";
    return text + names;
  }
  return String(err.message || err);
}

/** "username: 3-32 characters" -> "Username: 3-32 characters". @param {string} text */
function sentence(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : "";
}

export class Api {
  /** @param {string} base origin of the API, "" for this page's own */
  constructor(base = "") {
    this.base = base;
    /** @type {string|null} */
    this.token = null;
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {object} [body]
   * @returns {Promise<any>}
   */
  async call(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, "network", String(err));
    }
    if (response.status === 204) return null;
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = data && data.error ? data.error : { code: `http_${response.status}`, message: text };
      throw new ApiError(response.status, error.code, error.message, error);
    }
    return data;
  }

  /** What the server lets in: `{registration: "invite"|"open"|"closed"}` (no token). */
  server() {
    return this.call("GET", "/v1/server");
  }
  /** @param {string} username @param {string} password @param {string} [invite] */
  register(username, password, invite) {
    return this.call("POST", "/v1/register", invite ? { username, password, invite } : { username, password });
  }
  /** @param {string} username @param {string} password */
  login(username, password) {
    return this.call("POST", "/v1/login", { username, password });
  }
  logout() {
    return this.call("POST", "/v1/logout");
  }
  me() {
    return this.call("GET", "/v1/me");
  }
  readState() {
    return this.call("GET", "/v1/me/read_state");
  }
  /** @param {string} username */
  findUser(username) {
    return this.call("GET", `/v1/users?username=${encodeURIComponent(username)}`);
  }
  /** @param {string} username */
  openDirect(username) {
    return this.call("POST", "/v1/conversations/direct", { username });
  }
  /** @param {string} title @param {string[]} usernames */
  createGroup(title, usernames) {
    return this.call("POST", "/v1/conversations/group", { title, usernames });
  }
  /** @param {number} cid */
  conversation(cid) {
    return this.call("GET", `/v1/conversations/${cid}`);
  }
  /** @param {number} cid */
  members(cid) {
    return this.call("GET", `/v1/conversations/${cid}/members?limit=1000`);
  }
  /** @param {number} cid @param {string[]} usernames */
  addMembers(cid, usernames) {
    return this.call("POST", `/v1/conversations/${cid}/members`, { usernames });
  }
  /** @param {number} cid @param {number} uid */
  removeMember(cid, uid) {
    return this.call("DELETE", `/v1/conversations/${cid}/members/${uid}`);
  }
  /** @param {number} cid @param {{before?: number, limit?: number}} [page] */
  history(cid, page = {}) {
    const query = new URLSearchParams({ limit: String(page.limit || 50) });
    if (page.before) query.set("before", String(page.before));
    return this.call("GET", `/v1/conversations/${cid}/messages?${query}`);
  }
  /** @param {number} cid @param {number} from @param {number} to */
  receipts(cid, from, to) {
    return this.call("GET", `/v1/conversations/${cid}/receipts?from=${from}&to=${to}`);
  }
  /** @param {number} cid @param {number} seq */
  readers(cid, seq) {
    return this.call("GET", `/v1/conversations/${cid}/messages/${seq}/readers`);
  }
  /** Full-text search (§3, GET /v1/search), newest first.
   * @param {string} q @param {number|null} [before] the previous page's `next_before` */
  search(q, before) {
    const query = new URLSearchParams({ q, limit: "20" });
    if (before) query.set("before", String(before));
    return this.call("GET", `/v1/search?${query}`);
  }
  /** @param {number[]} userIds */
  presence(userIds) {
    return this.call("POST", "/v1/presence", { user_ids: userIds });
  }

  // -- the own account (§3 "Accounts") ------------------------------------------------------
  /** @param {string|null} displayName */
  setDisplayName(displayName) {
    return this.call("PUT", "/v1/me/profile", { display_name: displayName });
  }
  /** @param {string} current @param {string} next */
  changePassword(current, next) {
    return this.call("PUT", "/v1/me/password", { current_password: current, new_password: next });
  }
  sessions() {
    return this.call("GET", "/v1/me/sessions");
  }
  /** @param {number} id */
  revokeSession(id) {
    return this.call("DELETE", `/v1/me/sessions/${id}`);
  }

  // -- admins -------------------------------------------------------------------------------
  invites() {
    return this.call("GET", "/v1/admin/invites");
  }
  /** @param {{max_uses: number, expires_in_s: number, note: string}} invite */
  createInvite(invite) {
    return this.call("POST", "/v1/admin/invites", invite);
  }
  /** @param {number} id */
  revokeInvite(id) {
    return this.call("DELETE", `/v1/admin/invites/${id}`);
  }
  users() {
    return this.call("GET", "/v1/admin/users?limit=1000");
  }
  /** @param {string} username @param {string} password @param {boolean} admin */
  createUser(username, password, admin) {
    return this.call("POST", "/v1/admin/users", { username, password, admin });
  }
  /** @param {number} uid @param {boolean} deactivated */
  setDeactivated(uid, deactivated) {
    return this.call("POST", `/v1/admin/users/${uid}/${deactivated ? "deactivate" : "reactivate"}`);
  }
  /** @param {number} uid @param {string} password */
  resetPassword(uid, password) {
    return this.call("PUT", `/v1/admin/users/${uid}/password`, { password });
  }
  /** @param {number} uid @param {boolean} admin */
  setAdmin(uid, admin) {
    return this.call("PUT", `/v1/admin/users/${uid}/admin`, { admin });
  }
}
