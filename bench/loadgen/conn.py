"""Client connections for the load generators: chatd's protocol and Socket.IO (EIO 4, SIO 5).

Every frame a socket receives is handled as it is read (bench/loadgen/wire.py: picows, or
`websockets` with permessage-deflate) and reported to the process's Recorder.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import orjson

from bench.loadgen import wire
from bench.loadgen.recorder import Recorder, now
from bench.loadgen.staterec import StateRecorder
from bench.loadgen.wire import OPEN_TIMEOUT, Wire

# BENCH_RECEIVED_MS=100: every chatd member confirms delivery (`received`, docs/protocol.md §4.8)
# like the web app does: one frame per conversation per that many ms, for the highest seq got.
RECEIVED_MS = float(os.environ.get("BENCH_RECEIVED_MS", "0"))
STATE_EVENTS = frozenset({"read_state", "read", "receipts", "presence"})


class Conn:
    """Common state: the socket (`ws`, None until opened and after `abort`), a tag (what the
    scenario uses it for), when its connection last ended."""

    def __init__(self, rec: Recorder, tag: str) -> None:
        self.rec = rec
        self.tag = tag
        self.ws: Wire | None = None
        self.closed_at: float | None = None

    async def open(self, url: str, src_ip: str | None, deflate: bool, since: dict[str, int] | None) -> None:
        raise NotImplementedError

    async def send(self, target: Any, key: str, body: str) -> None:
        raise NotImplementedError

    async def _connect(self, url: str, src_ip: str | None, deflate: bool) -> Wire:
        # `ws` is set first: frames read with the handshake's response are handled (and may be
        # answered) before `open` returns
        self.ws = ws = wire.make(deflate, self.handle, self._closed)
        try:
            await ws.open(url, src_ip)
        except BaseException:
            self.ws = None
            raise
        return ws

    def _closed(self) -> None:
        self.closed_at = now()

    async def _until(self, ready: asyncio.Future[None], ws: Wire, what: str) -> None:
        """Wait for `ready` (it may fail with the server's refusal); if the connection ends or
        `OPEN_TIMEOUT` passes first, drop it and raise."""
        done, _ = await asyncio.wait(
            {ready, ws.closed}, timeout=OPEN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if ready in done and ready.exception() is None:
            return
        self.abort()
        if ready.done() and (exc := ready.exception()) is not None:
            raise exc
        raise ConnectionError(f"closed or timed out before {what}")

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (a client vanishing)."""
        if self.ws is not None:
            self.ws.abort()
        self.ws = None

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    def handle(self, raw: str, at: float) -> None:
        raise NotImplementedError


class ChatdConn(Conn):
    """chatd's protocol (docs/protocol.md); tracks per-conversation seqs to find gaps/dupes.

    With a StateRecorder, `read_state` replies are reported to it, and so are `receipts` and
    `presence` events if `watch` names them (scenario 5's sender devices and observers).
    """

    def __init__(
        self,
        rec: Recorder,
        tag: str,
        token: str,
        state: StateRecorder | None = None,
        watch: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(rec, tag)
        self.token = token
        self.state = state
        self.watch = watch
        self.user_id = 0
        self.expected: dict[int, int] = {}
        self.missing = 0
        self.dupes = 0
        self.received = 0
        self.synced_at: float | None = None
        self._synced: asyncio.Future[None] | None = None
        self._unconfirmed: dict[int, int] = {}
        self._confirming = False
        self.confirmed = 0
        self.received_ms = RECEIVED_MS  # 0: never confirm (the agent's `confirm` op sets it)

    def since(self) -> dict[str, int]:
        return {str(cid): nxt - 1 for cid, nxt in self.expected.items()}

    async def open(self, url: str, src_ip: str | None, deflate: bool, since: dict[str, int] | None) -> None:
        self.synced_at = None
        self._synced = asyncio.get_running_loop().create_future()
        ws = await self._connect(url, src_ip, deflate)
        auth: dict[str, Any] = {"type": "auth", "token": self.token}
        if since is not None:
            auth["since"] = since
        await ws.send(orjson.dumps(auth))
        await self._until(self._synced, ws, "synced")

    async def send(self, target: Any, key: str, body: str) -> None:
        assert self.ws is not None
        frame = {"type": "send", "conversation_id": target, "client_msg_id": key, "body": body, "id": key}
        await self.ws.send(orjson.dumps(frame))

    async def read(self, cid: int, seq: int, key: str) -> None:
        assert self.ws is not None
        await self.ws.send(orjson.dumps({"type": "read", "conversation_id": cid, "seq": seq, "id": key}))

    async def presence(self, status: str) -> None:
        assert self.ws is not None
        await self.ws.send(orjson.dumps({"type": "presence", "status": status}))

    def handle(self, raw: str, at: float) -> None:
        frame = orjson.loads(raw)
        kind = frame.get("type")
        if kind == "message":
            self.received += 1
            cid, seq = frame["conversation_id"], frame["seq"]
            expected = self.expected.get(cid)
            if expected is None or seq == expected:
                self.expected[cid] = seq + 1
            elif seq > expected:
                self.missing += seq - expected
                self.expected[cid] = seq + 1
            else:
                self.dupes += 1
            if frame.get("sender_id") != self.user_id:
                self.rec.delivered(frame.get("body", ""), at)
                if self.received_ms:
                    self._received(cid, seq)
        elif kind == "ack":
            self.rec.ack(frame["client_msg_id"], at, frame["conversation_id"], frame["seq"])
        elif kind == "ready":
            self.user_id = frame["user_id"]
            for conv in frame["conversations"]:
                self.expected.setdefault(conv["id"], conv["last_seq"] + 1)
        elif kind == "synced":
            self.synced_at = at
            if self._synced is not None and not self._synced.done():
                self._synced.set_result(None)
        elif kind == "conversation_added":
            conv = frame["conversation"]
            self.expected.setdefault(conv["id"], conv["last_seq"] + 1)
        elif kind in STATE_EVENTS:
            if self.state is not None:
                self._state_event(kind, frame, at)
        elif kind == "error":
            if self.state is not None and self.state.error(str(frame.get("ref")), raw):
                pass
            elif frame.get("ref") is not None:
                self.rec.error(frame["ref"], raw)
            elif self._synced is not None and not self._synced.done():
                self._synced.set_exception(ConnectionError(raw[:200]))
            else:
                self.rec.error(None, raw)

    def _received(self, cid: int, seq: int) -> None:
        if seq > self._unconfirmed.get(cid, 0):
            self._unconfirmed[cid] = seq
        if not self._confirming:
            self._confirming = True
            asyncio.get_running_loop().call_later(self.received_ms / 1000, self._confirm)

    def _confirm(self) -> None:
        self._confirming = False
        pending, self._unconfirmed = self._unconfirmed, {}
        if self.ws is None:
            return
        for cid, seq in pending.items():
            self.confirmed += 1
            self.ws.send_nowait(orjson.dumps({"type": "received", "conversation_id": cid, "seq": seq}))

    def _state_event(self, kind: str, frame: dict[str, Any], at: float) -> None:
        assert self.state is not None
        if kind == "read_state" and "ref" in frame:
            self.state.read_state(frame["ref"], at)
        elif kind == "receipts" and "receipts" in self.watch:
            self.state.receipts(frame["conversation_id"], frame["counts"], at)
        elif kind == "presence" and "presence" in self.watch:
            self.state.presence(frame["user_id"], frame["status"], at)


class SioConn(Conn):
    """Socket.IO v5 over Engine.IO v4, WebSocket transport only: just what the relay peers need."""

    _ids = itertools.count()

    def __init__(self, rec: Recorder, tag: str, rooms: list[str]) -> None:
        super().__init__(rec, tag)
        self.rooms = rooms
        self._acks: dict[int, Any] = {}
        self._joined: asyncio.Future[None] | None = None
        self._opening = ""  # the handshake's next frame: "open" (engine.io), "connect" (socket.io)

    async def open(self, url: str, src_ip: str | None, deflate: bool, since: dict[str, int] | None) -> None:
        """Engine.IO open -> "40" -> Socket.IO connect -> join the rooms -> their ack, all answered
        from `handle` as the frames come in."""
        joined = self._joined = asyncio.get_running_loop().create_future()
        self._opening = "open"
        ws = await self._connect(url.rstrip("/") + "/socket.io/?EIO=4&transport=websocket", src_ip, deflate)
        await self._until(joined, ws, "the rooms were joined")

    async def send(self, target: Any, key: str, body: str) -> None:
        assert self.ws is not None
        ack_id = next(self._ids)
        self._acks[ack_id] = key
        await self.ws.send(b"42%d%b" % (ack_id, orjson.dumps(["send", {"room": target, "body": body}])))

    def handle(self, raw: str, at: float) -> None:
        if raw.startswith("42["):
            event = orjson.loads(raw[2:])
            if event[0] == "message":
                self.rec.delivered(event[1]["body"], at)
        elif raw.startswith("43"):
            ack_id = int(raw[2 : raw.index("[")])
            key = self._acks.pop(ack_id, None)
            if key == "join":
                if self._joined is not None and not self._joined.done():
                    self._joined.set_result(None)
            elif key is not None:
                self.rec.ack(key, at)
        elif raw == "2" and self.ws is not None:  # engine.io ping -> pong
            self.ws.send_nowait("3")
        elif self._opening:
            self._handshake(raw)

    def _handshake(self, raw: str) -> None:
        assert self.ws is not None
        assert self._joined is not None
        if self._opening == "open" and raw.startswith("0"):
            self._opening = "connect"
            self.ws.send_nowait("40")
        elif self._opening == "connect" and raw.startswith("40"):
            self._opening = ""
            join_id = next(self._ids)
            self._acks[join_id] = "join"
            self.ws.send_nowait(b"42%d%b" % (join_id, orjson.dumps(["join", self.rooms])))
        elif not self._joined.done():
            what = "engine.io open" if self._opening == "open" else "socket.io connect"
            self._joined.set_exception(ConnectionError(f"unexpected {what}: {raw!r}"))
