// The WebSocket session (docs/protocol.md §4, §8): auth with `since`, reconnect with backoff and
// jitter, a liveness check, and the outbox sent strictly in the order it was typed.
//
// Order: the outbox is one list, sent from its head. Sends go out pipelined (up to the
// server's send window) while nothing is refused. When a send is refused for now
// (`rate_limited`, `unavailable`, ...), it and every send after it are held, whether already
// transmitted or not, and resent in order by one timer once `retry_after_ms` has passed; from
// then until the outbox is empty, one send at a time, each after the previous one's ack. A send
// transmitted after the refused one but acked anyway (the server's window ended between the
// two) is stored and stays so; the server refuses a connection's later sends after a
// `rate_limited` until its retry time has passed (§9), so that does not happen with chatd.
//
// Edits and deletes are outbox entries too ("sends" above and below means all three): queued
// while offline, transmitted in the order made, resent after a reconnect with the same
// client_msg_id (the server answers a stored one `duplicate`, §4.11).

/** Nothing heard for this long: ask with an app-level ping (§4.7). */
const QUIET_MS = 10000;
/** No frame within this after a ping: the path is dead; reconnect. */
const PONG_WITHIN_MS = 5000;
const CHECK_EVERY_MS = 1000;
const RETRY_LATER_MS = 1000;
/** CHATD_SEND_WINDOW's default: sends in flight at once (§8). */
const SEND_WINDOW = 128;
/** Refusals that resending cannot change (§8, step 3; §4.11 for edits and deletes): drop the
 * entry and tell the user. */
const FINAL = new Set([
  "not_member", "client_msg_id_conflict", "bad_request", "message_too_long",
  "not_found", "forbidden", "message_deleted", "edit_window_closed",
]);

/**
 * @typedef {import("./outbox.js").OutboxEntry} OutboxEntry
 * @typedef {import("./outbox.js").Outbox} Outbox
 * @typedef {"connecting"|"online"|"reconnecting"|"offline"|"crowded"|"stopped"} LinkState
 *   offline: the browser has no network; crowded: refused with 4009 (too many connections)
 * @typedef {object} SocketHooks
 * @property {() => Record<string, number>} since  `last[cid]` for every known conversation
 * @property {(frame: any) => void} frame  every frame from the server except pong and the answers to outbox entries
 * @property {(frame: any, entry: OutboxEntry) => void} ack  a send, edit or delete stored
 * @property {(state: LinkState, detail?: any) => void} state
 * @property {(entry: OutboxEntry, error: any) => void} failed  an entry refused for good, dropped from the outbox
 * @property {(entry: OutboxEntry, error: any) => void} waiting  an entry held for now, to be resent
 * @property {() => void} unauthorized  close 4001: the token is gone
 * @property {() => boolean} idle  whether to report this device idle after connecting
 */

export class Socket {
  /** @param {string} url @param {string} token @param {SocketHooks} hooks @param {Outbox} outbox */
  constructor(url, token, hooks, outbox) {
    this.url = url;
    this.token = token;
    this.hooks = hooks;
    this.outbox = outbox;
    /** @type {WebSocket|null} */
    this.ws = null;
    this.attempt = 0;
    this.lastClose = 0;
    this.stopped = false;
    /** @type {ReturnType<typeof setTimeout>|null} the next connection attempt */
    this.timer = null;
    /** @type {ReturnType<typeof setInterval>|null} */
    this.checker = null;
    this.lastHeard = 0;
    this.pingedAt = 0;
    /** @type {Map<string, string>} client_msg_id -> frame id of its transmission in flight */
    this.inflight = new Map();
    /** @type {Map<string, string>} frame id -> client_msg_id, for every send not yet answered */
    this.refs = new Map();
    this.nextRef = 1;
    /** @type {ReturnType<typeof setTimeout>|null} the one retry timer: held sends wait for it */
    this.resume = null;
    this.resumeAt = 0;
    this.careful = false;
    /** @type {any} the last `too_many_connections` error, for the 4009 close after it */
    this.crowded = null;
    this.listening = new AbortController();
  }

  start() {
    this.stopped = false;
    const signal = this.listening.signal;
    window.addEventListener("offline", () => this.networkLost(), { signal });
    window.addEventListener("online", () => this.networkBack(), { signal });
    this.open();
  }

  stop() {
    this.stopped = true;
    this.listening.abort();
    for (const timer of [this.timer, this.resume]) if (timer) clearTimeout(timer);
    if (this.checker) clearInterval(this.checker);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.hooks.state("stopped");
  }

  /** True while the socket is open. */
  get live() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  open() {
    this.timer = null;
    if (!navigator.onLine) {
      this.hooks.state("offline"); // `online` opens it
      return;
    }
    this.hooks.state(this.attempt === 0 && this.lastClose === 0 ? "connecting" : this.crowded ? "crowded" : "reconnecting", this.crowded);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "auth", token: this.token, since: this.hooks.since() }));
      // The server processes these after `synced` (§4.1); committed ones come back duplicate.
      this.pump();
      if (this.hooks.idle()) this.raw({ type: "presence", status: "idle" });
      this.lastHeard = Date.now();
      this.checker = setInterval(() => this.check(), CHECK_EVERY_MS);
    };
    ws.onmessage = (event) => {
      if (ws === this.ws) this.receive(JSON.parse(event.data));
    };
    ws.onclose = (event) => {
      if (ws === this.ws) this.closed(event.code);
    };
  }

  /** The liveness check: a quiet socket is pinged, and one that stays silent is given up. */
  check() {
    const now = Date.now();
    if (this.pingedAt) {
      if (now - this.pingedAt > PONG_WITHIN_MS) this.abandon();
    } else if (now - this.lastHeard > QUIET_MS && this.live) {
      this.pingedAt = now;
      this.raw({ type: "ping" });
    }
  }

  /** Stop using the socket at once (a dead path may take minutes to report its close). */
  abandon() {
    const ws = this.ws;
    if (!ws) return;
    this.closed(4000);
    ws.close(4000, "no answer");
  }

  networkLost() {
    if (this.stopped) return;
    if (this.ws) this.abandon();
    else if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.hooks.state("offline");
  }

  networkBack() {
    if (this.stopped || this.ws) return;
    if (this.timer) clearTimeout(this.timer);
    this.attempt = 0;
    this.open();
  }

  /** @param {number} code */
  closed(code) {
    if (this.checker) clearInterval(this.checker);
    this.checker = null;
    this.pingedAt = 0;
    this.ws = null;
    this.inflight.clear(); // sent again, in order, on the next connection
    this.refs.clear();
    if (this.stopped) return;
    if (code === 4001) {
      this.stopped = true;
      this.hooks.state("stopped");
      this.hooks.unauthorized();
      return;
    }
    if (code !== 4009) this.crowded = null;
    if (!navigator.onLine) {
      this.hooks.state("offline");
      return;
    }
    this.hooks.state(this.crowded ? "crowded" : "reconnecting", this.crowded);
    let delay;
    if (code === 1012 && this.lastClose !== 1012) {
      delay = Math.random() * 1000; // a worker restarting: reconnect now, to another one
    } else {
      delay = Math.random() * Math.min(30000, 500 * 2 ** this.attempt); // full jitter
      this.attempt += 1;
    }
    this.lastClose = code;
    this.timer = setTimeout(() => this.open(), delay);
  }

  /** @param {any} frame */
  receive(frame) {
    this.lastHeard = Date.now();
    this.pingedAt = 0;
    switch (frame.type) {
      case "pong":
        return;
      case "synced":
        this.attempt = 0;
        this.lastClose = 0;
        this.crowded = null;
        this.hooks.state("online");
        break;
      case "ack":
        this.acked(frame);
        return;
      case "error":
        if (frame.code === "too_many_connections") this.crowded = frame;
        if (typeof frame.ref === "string" && this.refs.has(frame.ref)) {
          this.refused(frame);
          return;
        }
        break;
    }
    this.hooks.frame(frame);
  }

  /** @param {any} frame */
  acked(frame) {
    const cmid = frame.client_msg_id;
    if (typeof frame.ref === "string") this.refs.delete(frame.ref);
    this.inflight.delete(cmid);
    const entry = this.outbox.get(cmid);
    if (entry && this.outbox.remove(cmid)) this.hooks.ack(frame, entry);
    if (this.outbox.size === 0) this.careful = false;
    this.pump();
  }

  /** An `error` answering one of our sends (its `ref` is the frame id). @param {any} frame */
  refused(frame) {
    const cmid = this.refs.get(frame.ref);
    this.refs.delete(frame.ref);
    const entry = this.outbox.get(cmid);
    if (!entry) return;
    if (FINAL.has(frame.code)) {
      this.inflight.delete(cmid);
      this.outbox.remove(cmid);
      this.hooks.failed(entry, frame);
      if (this.outbox.size === 0) this.careful = false;
      this.pump();
      return;
    }
    // rate_limited, unavailable, internal, shutting_down: the same client_msg_id again later
    // (shutting_down is followed by 1012, and the reconnect resends it anyway).
    if (this.inflight.get(cmid) === frame.ref) {
      // Hold it and everything typed after it, sent or not: all go again, in order.
      let after = false;
      for (const held of this.outbox.values()) {
        after ||= held.client_msg_id === cmid;
        if (after) this.inflight.delete(held.client_msg_id);
      }
      this.careful = true;
      this.hold(frame.code === "rate_limited" && frame.retry_after_ms > 0 ? frame.retry_after_ms : RETRY_LATER_MS);
    }
    this.hooks.waiting(entry, frame);
  }

  /** Sends wait until `ms` from now (the later of this and any wait already set). @param {number} ms */
  hold(ms) {
    const at = Date.now() + ms;
    if (this.resume && at <= this.resumeAt) return;
    if (this.resume) clearTimeout(this.resume);
    this.resumeAt = at;
    this.resume = setTimeout(() => {
      this.resume = null;
      this.pump();
    }, ms);
  }

  /** Transmit, from the head of the outbox, what may go now. */
  pump() {
    if (!this.live || this.resume) return;
    const limit = this.careful ? 1 : SEND_WINDOW;
    for (const entry of this.outbox.values()) {
      if (this.inflight.size >= limit) return;
      if (!this.inflight.has(entry.client_msg_id)) this.transmit(entry);
    }
  }

  /** @param {OutboxEntry} entry */
  send(entry) {
    this.outbox.add(entry);
    this.pump();
  }

  /** @param {OutboxEntry} entry */
  transmit(entry) {
    const id = `s${this.nextRef++}`;
    this.inflight.set(entry.client_msg_id, id);
    this.refs.set(id, entry.client_msg_id);
    const { client_msg_id, conversation_id, body } = entry;
    /** @type {Record<string, any>} */
    let frame;
    if (entry.kind === "edit") frame = { type: "edit", id, conversation_id, client_msg_id, seq: entry.seq, body };
    else if (entry.kind === "delete") frame = { type: "delete", id, conversation_id, client_msg_id, seq: entry.seq };
    else frame = { type: "send", id, conversation_id, client_msg_id, body };
    if (entry.attachments?.length) frame.attachments = entry.attachments.map((file) => file.id);
    this.raw(frame);
  }

  /** Frames that are only worth sending on a live socket (read, received, presence, typing).
   * @param {Record<string, any>} frame @returns {boolean} whether it was sent */
  raw(frame) {
    if (this.live) this.ws.send(JSON.stringify(frame));
    return this.live;
  }
}
