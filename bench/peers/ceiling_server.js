// The load-generator ceiling's server (issue 23): the cheapest relay that still speaks what the
// load generators speak, so a step it keeps up with measures the generators, not a server.
// One process, no nginx, no storage, no Redis; it parses a frame only as far as it must route it.
// Usage: node ceiling_server.js <port> ; the `ws` package on NODE_PATH.
//   /socket.io/...  Engine.IO 4 / Socket.IO 5 as bench/loadgen/conn.py SioConn speaks it: the
//                   relay peers' protocol; a message goes to the room's other members.
//   /v1/ws          chatd's frames as ChatdConn speaks them (auth, ready, synced, send, ack,
//                   message); the token is "<user id>:<conversation id>,..." (its membership);
//                   a message goes to every member, the sender's own socket too, as chatd does.
const { WebSocketServer } = require("ws");

const rooms = new Map(); // room or conversation id (string) -> Set of sockets
const seqs = new Map(); // conversation id -> last seq
const OPEN = '0{"sid":"ceiling","upgrades":[],"pingInterval":600000,"pingTimeout":600000,"maxPayload":16777216}';

function join(ws, room) {
  let members = rooms.get(room);
  if (!members) rooms.set(room, (members = new Set()));
  members.add(ws);
  ws.rooms.push(room);
}

function sio(ws, text) {
  if (text === "40") return ws.send('40{"sid":"ceiling"}');
  if (text === "3") return;
  if (!text.startsWith("42")) return;
  const open = text.indexOf("[");
  const id = text.slice(2, open);
  if (text.startsWith('["send"', open)) {
    // 42<id>["send",{"room":"...","body":"..."}]: the room is cut out, the rest relayed as is
    const at = text.indexOf('"room":"', open) + 8;
    const room = text.slice(at, text.indexOf('"', at));
    const data = text.slice(text.indexOf("{", open), -1);
    const out = Buffer.from('42["message",' + data + "]");
    for (const peer of rooms.get(room) || []) if (peer !== ws) peer.send(out, { binary: false });
  } else {
    for (const room of JSON.parse(text.slice(open))[1]) join(ws, room);
  }
  ws.send("43" + id + "[true]");
}

function chatd(ws, text) {
  const frame = JSON.parse(text);
  if (frame.type === "send") {
    const cid = String(frame.conversation_id);
    const seq = (seqs.get(cid) || 0) + 1;
    seqs.set(cid, seq);
    const ack = { type: "ack", id: frame.id, client_msg_id: frame.client_msg_id, conversation_id: frame.conversation_id, seq };
    ws.send(JSON.stringify(ack));
    const event = { type: "message", conversation_id: frame.conversation_id, seq, sender_id: ws.user, body: frame.body };
    const out = Buffer.from(JSON.stringify(event));
    for (const peer of rooms.get(cid) || []) peer.send(out, { binary: false });
  } else if (frame.type === "auth") {
    const [user, list] = String(frame.token).split(":");
    ws.user = Number(user);
    const conversations = [];
    for (const cid of list ? list.split(",") : []) {
      join(ws, cid);
      conversations.push({ id: Number(cid), last_seq: seqs.get(cid) || 0 });
    }
    ws.send(JSON.stringify({ type: "ready", user_id: ws.user, conversations }));
    ws.send('{"type":"synced"}');
  }
}

const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(process.argv[2]), perMessageDeflate: false, maxPayload: 16777216 });
wss.on("connection", (ws, req) => {
  ws.rooms = [];
  const handle = req.url.startsWith("/socket.io/") ? sio : chatd;
  if (handle === sio) ws.send(OPEN);
  ws.on("message", (data) => handle(ws, data.toString()));
  ws.on("close", () => {
    for (const room of ws.rooms) rooms.get(room).delete(ws);
  });
});
wss.on("listening", () => console.log("listening"));
