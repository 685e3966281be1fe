// Node.js like-for-like durable peer for the benchmark (issue 23): chatd's write path in Node.
// ws + pg + ioredis, chatd's own schema (the bench stack's database, migrated by chatd):
// per-conversation gapless seq (conversations.last_seq under the row lock), dedupe by
// (sender, client_msg_id), ack only after COMMIT, publish to Redis after COMMIT, delivery to
// every member's socket on every process (one Redis subscriber per process).
// It speaks the subset of chatd's protocol the bench's load generator uses (docs/protocol.md
// §4): auth (token looked up by SHA-256 in `tokens`, as chatd stores it) -> ready -> synced;
// send -> ack (duplicate: true for a resent client_msg_id) or error; live message frames.
// Not implemented: `since` catch-up, membership changes while connected, read/presence/typing,
// rate limits.
// Usage: node durable_server.js <unix socket path>; DATABASE_URL and REDIS_URL in the environment.
const crypto = require("crypto");
const fs = require("fs");
const http = require("http");
const { WebSocketServer } = require("ws");
const pg = require("pg");
const Redis = require("ioredis");

pg.types.setTypeParser(20, (v) => parseInt(v, 10)); // int8: ids and seqs fit in a double here
pg.types.setTypeParser(1184, (v) => v.replace(" ", "T").replace(/\+00$/, "+00:00")); // timestamptz as text

const CHANNEL = "nodepeer:events";
const CMID = /^[A-Za-z0-9._:-]{1,64}$/;
const MAX_CHARS = 4000;

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
const pub = new Redis(process.env.REDIS_URL);
const sub = new Redis(process.env.REDIS_URL);
const GAP_WAIT_MS = 1000;
// conversation id -> { sockets: this process's authenticated members' sockets, next: the seq to
// deliver next, held: events that came before an earlier seq (two processes publish
// independently), timer: how long a gap is waited for before the held events go anyway }
const rooms = new Map();

function send(ws, obj) {
  if (ws.readyState === 1) ws.send(typeof obj === "string" ? obj : JSON.stringify(obj));
}

function error(ws, code, message, ref, extra) {
  const frame = { type: "error", code, message, ...extra };
  if (ref !== undefined && ref !== null) frame.ref = ref;
  send(ws, frame);
}

async function auth(ws, frame) {
  if (!frame || frame.type !== "auth" || typeof frame.token !== "string") {
    error(ws, "unauthorized", "the first frame must be auth");
    return ws.close(4001, "unauthorized");
  }
  const hash = crypto.createHash("sha256").update(frame.token).digest();
  const user = await pool.query(
    "SELECT t.user_id FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1 AND u.deactivated_at IS NULL",
    [hash],
  );
  if (user.rowCount === 0) {
    error(ws, "unauthorized", "invalid or revoked token");
    return ws.close(4001, "unauthorized");
  }
  ws.userId = user.rows[0].user_id;
  const convs = await pool.query(
    "SELECT c.id, c.kind, c.title, c.created_at, c.last_seq, c.member_count FROM members m" +
      " JOIN conversations c ON c.id = m.conversation_id WHERE m.user_id = $1 ORDER BY c.id",
    [ws.userId],
  );
  ws.after = new Map(); // conversation id -> last_seq in `ready`: live from the next one
  for (const c of convs.rows) {
    ws.after.set(c.id, c.last_seq);
    if (!rooms.has(c.id)) rooms.set(c.id, { sockets: new Set(), next: c.last_seq + 1, held: new Map(), timer: null });
    rooms.get(c.id).sockets.add(ws);
  }
  send(ws, { type: "ready", user_id: ws.userId, conversations: convs.rows, more: false, presence: [] });
  send(ws, { type: "synced" });
}

function onSend(ws, f) {
  const ref = f.id;
  if (typeof f.client_msg_id !== "string" || !CMID.test(f.client_msg_id))
    return error(ws, "bad_request", "client_msg_id: 1-64 characters of A-Z a-z 0-9 . _ : -", ref, { field: "client_msg_id" });
  if (typeof f.body !== "string" || f.body.trim() === "")
    return error(ws, "bad_request", "body: must not be empty", ref, { field: "body" });
  if (!Number.isSafeInteger(f.conversation_id) || f.conversation_id <= 0)
    return error(ws, "bad_request", "conversation_id: expected a positive integer", ref, { field: "conversation_id" });
  if ([...f.body].length > MAX_CHARS)
    return error(ws, "message_too_long", `body is longer than ${MAX_CHARS} characters`, ref);
  queue.push({ ws, cid: f.conversation_id, sender: ws.userId, cmid: f.client_msg_id, body: f.body, ref });
  if (!flushing) flush();
}

// Group commit: every send that arrived while the previous transaction ran goes into the next one.
let queue = [];
let flushing = false;

async function flush() {
  flushing = true;
  while (queue.length) {
    const batch = queue;
    queue = [];
    let results;
    try {
      results = await append(batch);
    } catch (err) {
      console.error("append failed:", err.message);
      for (const item of batch) error(item.ws, "unavailable", "try again", item.ref);
      continue;
    }
    const events = [];
    batch.forEach((item, i) => {
      const r = results[i];
      if (r.error) return error(item.ws, r.error, r.message, item.ref);
      const ack = { type: "ack", conversation_id: item.cid, client_msg_id: item.cmid, message_id: r.id, seq: r.seq, created_at: r.created_at, duplicate: r.duplicate };
      if (item.ref !== undefined && item.ref !== null) ack.ref = item.ref;
      send(item.ws, ack);
      if (!r.duplicate) {
        const msg = { type: "message", conversation_id: item.cid, seq: r.seq, id: r.id, kind: "text", sender_id: item.sender, client_msg_id: item.cmid, body: item.body, created_at: r.created_at };
        events.push(`${item.cid}\t${r.seq}\t${JSON.stringify(msg)}`);
      }
    });
    // after COMMIT: one PUBLISH per batch, every process delivers to its own sockets
    if (events.length) pub.publish(CHANNEL, events.join("\n")).catch((err) => console.error("publish:", err.message));
  }
  flushing = false;
}

// One transaction for the batch; returns one result per item, in order.
async function append(batch) {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const cids = [...new Set(batch.map((b) => b.cid))].sort((a, b) => a - b);
    // the row locks serialise appends to a conversation (both processes): gapless seqs
    await client.query("SELECT id FROM conversations WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE", [cids]);
    // one row per item: the message already stored under its (sender, client_msg_id), if any,
    // and whether the sender is a member (read after the lock: a concurrent resend is seen)
    const checked = await client.query(
      "SELECT k.ord, x.conversation_id, x.id, x.seq, x.created_at," +
        " EXISTS (SELECT 1 FROM members m WHERE m.conversation_id = k.cid AND m.user_id = k.sender) AS member" +
        " FROM unnest($1::bigint[], $2::bigint[], $3::text[]) WITH ORDINALITY AS k (cid, sender, cmid, ord)" +
        " LEFT JOIN messages x ON x.sender_id = k.sender AND x.client_msg_id = k.cmid",
      [batch.map((b) => b.cid), batch.map((b) => b.sender), batch.map((b) => b.cmid)],
    );
    const found = new Array(batch.length);
    for (const r of checked.rows) found[r.ord - 1] = r;
    const results = new Array(batch.length);
    const fresh = []; // indexes of rows to insert
    const inBatch = new Map(); // a key sent twice in one batch: the second is a duplicate of the first
    batch.forEach((b, i) => {
      const key = `${b.sender}\t${b.cmid}`;
      const old = found[i].id === null ? null : found[i];
      if (old) {
        results[i] = old.conversation_id === b.cid
          ? { id: old.id, seq: old.seq, created_at: old.created_at, duplicate: true }
          : { error: "client_msg_id_conflict", message: "client_msg_id was already used for another conversation" };
      } else if (!found[i].member) {
        results[i] = { error: "not_member", message: "not a member of this conversation" };
      } else if (inBatch.has(key)) {
        results[i] = { sameAs: inBatch.get(key) };
      } else {
        inBatch.set(key, i);
        fresh.push(i);
      }
    });
    if (fresh.length) {
      // seqs: the conversation's last_seq (bumped by the batch's count) plus each row's offset
      const offsets = new Map();
      const offset = fresh.map((i) => {
        const n = (offsets.get(batch[i].cid) || 0) + 1;
        offsets.set(batch[i].cid, n);
        return n;
      });
      const rows = await client.query(
        "WITH bumped AS (UPDATE conversations c SET last_seq = c.last_seq + k.n" +
          " FROM unnest($6::bigint[], $7::bigint[]) AS k (id, n) WHERE c.id = k.id RETURNING c.id, c.last_seq - k.n AS base)" +
          " INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body)" +
          " SELECT r.cid, b.base + r.off, r.sender, r.cmid, 'text', r.body" +
          " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[]) AS r (cid, off, sender, cmid, body)" +
          " JOIN bumped b ON b.id = r.cid RETURNING id, seq, created_at, sender_id, client_msg_id",
        [
          fresh.map((i) => batch[i].cid), offset, fresh.map((i) => batch[i].sender),
          fresh.map((i) => batch[i].cmid), fresh.map((i) => batch[i].body),
          [...offsets.keys()], [...offsets.values()],
        ],
      );
      // RETURNING promises no order: match the rows by their (sender, client_msg_id)
      const byKey = new Map(rows.rows.map((r) => [`${r.sender_id}\t${r.client_msg_id}`, r]));
      for (const i of fresh) {
        const r = byKey.get(`${batch[i].sender}\t${batch[i].cmid}`);
        results[i] = { id: r.id, seq: r.seq, created_at: r.created_at, duplicate: false };
      }
    }
    await client.query("COMMIT");
    results.forEach((r, i) => {
      if (r.sameAs !== undefined) results[i] = { ...results[r.sameAs], duplicate: true };
    });
    return results;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

function deliver(payload) {
  for (const line of payload.split("\n")) {
    const tab = line.indexOf("\t");
    const tab2 = line.indexOf("\t", tab + 1);
    const cid = Number(line.slice(0, tab));
    const room = rooms.get(cid);
    if (!room) continue;
    const seq = Number(line.slice(tab + 1, tab2));
    const frame = line.slice(tab2 + 1); // serialised once, the same string to every socket
    if (seq < room.next) continue;
    room.held.set(seq, frame);
    drain(cid, room);
  }
}

// Deliver the room's events in seq order; wait up to GAP_WAIT_MS for a missing one.
function drain(cid, room) {
  while (room.held.has(room.next)) {
    const seq = room.next;
    const frame = room.held.get(seq);
    room.held.delete(seq);
    room.next += 1;
    for (const ws of room.sockets) if (seq > ws.after.get(cid)) send(ws, frame);
  }
  if (room.held.size === 0 && room.timer) {
    clearTimeout(room.timer);
    room.timer = null;
  } else if (room.held.size && !room.timer) {
    room.timer = setTimeout(() => {
      room.timer = null;
      room.next = Math.min(...room.held.keys());
      drain(cid, room);
    }, GAP_WAIT_MS);
  }
}

function onConnection(ws) {
  let authed = null; // the auth promise: frames that come before it resolves wait for it
  ws.on("message", (data, isBinary) => {
    let frame;
    try {
      frame = isBinary ? null : JSON.parse(data.toString());
    } catch {
      frame = null;
    }
    if (authed === null) {
      authed = auth(ws, frame).catch((err) => {
        console.error("auth:", err.message);
        ws.close(1011);
      });
      return;
    }
    authed.then(() => {
      if (!ws.userId) return;
      if (frame === null || typeof frame !== "object") return error(ws, "bad_json", "frame is not valid JSON");
      if (frame.type === "send") return onSend(ws, frame);
      if (frame.type === "ping") return send(ws, { type: "pong" });
      error(ws, "unknown_type", `unknown frame type '${frame.type}'`, frame.id);
    });
  });
  ws.on("close", () => {
    for (const cid of (ws.after || new Map()).keys()) {
      const room = rooms.get(cid);
      room.sockets.delete(ws);
      if (!room.sockets.size) {
        if (room.timer) clearTimeout(room.timer);
        rooms.delete(cid);
      }
    }
  });
}

async function main() {
  await sub.subscribe(CHANNEL);
  sub.on("message", (_channel, payload) => deliver(payload));
  const server = http.createServer((_req, res) => res.writeHead(404).end());
  const wss = new WebSocketServer({ server, path: "/v1/ws", perMessageDeflate: false, maxPayload: 1 << 20 });
  wss.on("connection", onConnection);
  // nginx workers run as another user: let them connect to the socket
  server.listen(process.argv[2], () => fs.chmodSync(process.argv[2], 0o666));
  process.on("SIGTERM", () => process.exit(0));
}
main();
