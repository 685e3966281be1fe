// Node.js Socket.IO relay for the benchmark: join rooms, relay `send` to the room, ack. No storage.
// Usage: node sio_server.js <unix socket path> ; REDIS_URL in the environment. One process per worker.
const fs = require("fs");
const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

async function main() {
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const server = http.createServer();
  const io = new Server(server, { transports: ["websocket"], adapter: createAdapter(pub, sub) });
  io.on("connection", (socket) => {
    socket.on("join", (rooms, ack) => { socket.join(rooms); ack(true); });
    socket.on("send", (data, ack) => { socket.to(data.room).emit("message", data); ack(true); });
  });
  // nginx workers run as another user: let them connect to the socket
  server.listen(process.argv[2], () => fs.chmodSync(process.argv[2], 0o666));
}
main();
