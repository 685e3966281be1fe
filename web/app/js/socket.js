// The WebSocket session (docs/protocol.md §4, §8): auth with `since`, reconnect with backoff and
// jitter, and the outbox of unacknowledged sends, resent with their client_msg_id until acked.

const PING_EVERY_MS = 30000;
const PONG_WITHIN_MS = 10000;
const RETRY_LATER_MS = 1000;
/** Sends that cannot succeed by resending (§8, step 3): drop them and tell the user. */
const FINAL = new Set(["not_member", "client_msg_id_conflict", "bad_request", "message_too_long"]);

/**
 * @typedef {{client_msg_id: string, conversation_id: number, body: string}} OutboxEntry
 * @typedef {"connecting"|"online"|"reconnecting"|"stopped"} LinkState
 * @typedef {object} SocketHooks
 * @property {() => Record<string, number>} since  `last[cid]` for every known conversation
 * @property {(frame: any) => void} frame  every frame from the server except pong
 * @property {(state: LinkState) => void} state
 * @property {(entry: OutboxEntry, error: any) => void} failed  a send dropped from the outbox
 * @property {(entries: OutboxEntry[]) => void} saveOutbox
 * @property {() => void} unauthorized  close 4001: the token is gone
 * @property {() => boolean} idle  whether to report this device idle after connecting
 */

export class Socket {
  /** @param {string} url @param {string} token @param {SocketHooks} hooks @param {OutboxEntry[]} outbox */
  constructor(url, token, hooks, outbox = []) {
    this.url = url;
    this.token = token;
    this.hooks = hooks;
    /** @type {Map<string, OutboxEntry>} in send order */
    this.outbox = new Map(outbox.map((e) => [e.client_msg_id, e]));
    /** @type {WebSocket|null} */
    this.ws = null;
    this.attempt = 0;
    this.lastClose = 0;
    this.stopped = false;
    this.synced = false;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.timer = null;
    /** @type {ReturnType<typeof setInterval>|null} */
    this.pinger = null;
    this.awaitingPong = 0;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.pinger) clearInterval(this.pinger);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.hooks.state("stopped");
  }

  /** True while authenticated on an open socket. */
  get live() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  open() {
    this.hooks.state(this.attempt === 0 && this.lastClose === 0 ? "connecting" : "reconnecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.synced = false;
    ws.onopen = () => {
      const since = this.hooks.since();
      ws.send(JSON.stringify({ type: "auth", token: this.token, since }));
      // The server processes these after `synced` (§4.1); committed ones come back duplicate.
      for (const entry of this.outbox.values()) this.transmit(entry);
      if (this.hooks.idle()) this.raw({ type: "presence", status: "idle" });
      this.pinger = setInterval(() => this.ping(), PING_EVERY_MS);
    };
    ws.onmessage = (event) => this.receive(JSON.parse(event.data));
    ws.onclose = (event) => this.closed(ws, event.code);
  }

  ping() {
    if (!this.live) return;
    if (this.awaitingPong && Date.now() - this.awaitingPong > PONG_WITHIN_MS) {
      this.ws.close(4000, "no pong"); // a dead path: reconnect
      return;
    }
    if (!this.awaitingPong) this.awaitingPong = Date.now();
    this.raw({ type: "ping" });
  }

  /** @param {WebSocket} ws @param {number} code */
  closed(ws, code) {
    if (ws !== this.ws) return;
    if (this.pinger) clearInterval(this.pinger);
    this.awaitingPong = 0;
    this.ws = null;
    if (this.stopped) return;
    if (code === 4001) {
      this.stopped = true;
      this.hooks.state("stopped");
      this.hooks.unauthorized();
      return;
    }
    this.hooks.state("reconnecting");
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
    switch (frame.type) {
      case "pong":
        this.awaitingPong = 0;
        return;
      case "synced":
        this.synced = true;
        this.attempt = 0;
        this.lastClose = 0;
        this.hooks.state("online");
        break;
      case "ack":
        if (this.outbox.delete(frame.client_msg_id)) this.persist();
        break;
      case "error":
        if (typeof frame.ref === "string" && this.outbox.has(frame.ref)) this.sendFailed(frame);
        break;
    }
    this.hooks.frame(frame);
  }

  /** An `error` answering one of our sends (its `ref` is the client_msg_id). @param {any} frame */
  sendFailed(frame) {
    const entry = this.outbox.get(frame.ref);
    if (FINAL.has(frame.code)) {
      this.outbox.delete(frame.ref);
      this.persist();
      this.hooks.failed(entry, frame);
      return;
    }
    // rate_limited, unavailable, internal, shutting_down: the same client_msg_id again later
    // (shutting_down is followed by 1012, and the reconnect resends it anyway).
    const wait = frame.code === "rate_limited" ? frame.retry_after_ms || RETRY_LATER_MS : RETRY_LATER_MS;
    setTimeout(() => {
      if (this.outbox.has(entry.client_msg_id) && this.live) this.transmit(entry);
    }, wait);
  }

  /** @param {OutboxEntry} entry */
  send(entry) {
    this.outbox.set(entry.client_msg_id, entry);
    this.persist();
    if (this.live) this.transmit(entry);
  }

  /** @param {OutboxEntry} entry */
  transmit(entry) {
    this.raw({ type: "send", id: entry.client_msg_id, ...entry });
  }

  /** Frames that are only worth sending on a live socket (read, presence, typing).
   * @param {Record<string, any>} frame */
  raw(frame) {
    if (this.live) this.ws.send(JSON.stringify(frame));
  }

  persist() {
    this.hooks.saveOutbox([...this.outbox.values()]);
  }
}
