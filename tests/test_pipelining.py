"""Pipelined sends (docs/protocol.md §7, §8): a connection's sends share group commits, acks
come back in send order, and a client ahead of its acks is slowed, never closed."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import uuid
from collections.abc import Callable

import asyncpg
import orjson

from tests.conftest import Worker
from tests.helpers import Api, Frame, Ws


def send_frame(cid: int, client_msg_id: str, body: str) -> Frame:
    return {"type": "send", "conversation_id": cid, "client_msg_id": client_msg_id, "body": body}


async def replies(ws: Ws, count: int) -> list[Frame]:
    """The next `count` replies (ack, error, read_state with a ref, pong), in arrival order."""
    found = []
    for _ in range(count):
        found.append(
            await ws.expect(lambda f: f["type"] in ("ack", "error", "pong") or "ref" in f, timeout=30)
        )
    return found


async def test_sends_of_one_connection_share_commits_and_keep_their_order(
    w1: Api, db: asyncpg.Connection
) -> None:
    alice, bob, carol = await w1.user(), await w1.user(), await w1.user()
    first, second = await w1.direct(alice, bob), await w1.direct(alice, carol)
    ws = await Ws.connect(w1.base_url, alice.token)
    ids = [f"p-{i}-{uuid.uuid4().hex[:8]}" for i in range(60)]
    sent = [(first if i % 3 else second, cmid) for i, cmid in enumerate(ids)]
    for cid, cmid in sent:  # written back to back, no ack awaited
        await ws.send_json(send_frame(cid, cmid, cmid))
    acks = await replies(ws, len(sent))
    assert [(a["type"], a["conversation_id"], a["client_msg_id"]) for a in acks] == [
        ("ack", cid, cmid) for cid, cmid in sent
    ]
    for cid in (first, second):  # per conversation: 1..n, gapless, in send order
        assert [a["seq"] for a in acks if a["conversation_id"] == cid] == list(
            range(1, sum(1 for c, _ in sent if c == cid) + 1)
        )
    rows = await db.fetch(
        "SELECT client_msg_id, seq, xmin::text AS tx FROM messages WHERE sender_id = $1", alice.id
    )
    assert {r["client_msg_id"]: r["seq"] for r in rows} == {a["client_msg_id"]: a["seq"] for a in acks}
    # Sends read while earlier ones were committing joined one statement: fewer transactions
    # than sends (one at a time, every send had its own).
    assert len({r["tx"] for r in rows}) < len(sent)
    await ws.close()


async def test_duplicate_client_msg_id_inside_the_window(w1: Api, db: asyncpg.Connection) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    ws = await Ws.connect(w1.base_url, alice.token)
    for cmid in ("a", "dup", "dup", "b", "dup"):
        await ws.send_json({**send_frame(cid, f"{cmid}-{alice.id}", cmid), "id": cmid})
    acks = await replies(ws, 5)
    assert [(a["type"], a["seq"], a["duplicate"], a["ref"]) for a in acks] == [
        ("ack", 1, False, "a"),
        ("ack", 2, False, "dup"),
        ("ack", 2, True, "dup"),
        ("ack", 3, False, "b"),
        ("ack", 2, True, "dup"),
    ]
    assert len({a["message_id"] for a in acks}) == 3
    assert await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", cid) == 3
    await ws.close()


async def test_frames_after_sends_wait_for_them(w1: Api) -> None:
    """A `read` of the seq a pipelined send will get, and a `ping`, come after its ack."""
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    ws = await Ws.connect(w1.base_url, alice.token)
    for i in range(5):
        await ws.send_json(send_frame(cid, f"r-{alice.id}-{i}", f"m{i}"))
    await ws.send_json({"type": "read", "id": "r", "conversation_id": cid, "seq": 5})
    await ws.send_json({"type": "ping"})
    got = await replies(ws, 7)
    assert [f["type"] for f in got] == ["ack"] * 5 + ["read_state", "pong"]
    assert [f["seq"] for f in got[:5]] == [1, 2, 3, 4, 5]
    assert got[5]["last_read_seq"] == 5
    await ws.close()


async def test_acks_in_send_order_across_many_windows(spawn_worker: Callable[..., Worker]) -> None:
    worker = spawn_worker(CHATD_SEND_WINDOW="4")
    api = Api(worker.url)
    alice, bob = await api.user(), await api.user()
    cid = await api.direct(alice, bob)
    ws = await Ws.connect(worker.url, alice.token)
    for i in range(40):  # ten windows' worth without reading an ack
        await ws.send_json(send_frame(cid, f"w-{alice.id}-{i}", f"m{i}"))
    acks = await replies(ws, 40)
    assert [(a["type"], a["seq"]) for a in acks] == [("ack", i + 1) for i in range(40)]
    assert ws.close_code is None
    await ws.close()


async def silent_socket(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An authenticated WebSocket that never answers a ping (a raw socket: client libraries
    answer pings on their own)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = orjson.dumps({"type": "auth", "token": token})
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    size = (
        bytes([0x80 | len(payload)]) if len(payload) < 126 else struct.pack("!BH", 0x80 | 126, len(payload))
    )
    writer.write(b"\x81" + size + mask + masked)
    await writer.drain()
    return reader, writer  # a writer that is collected closes the socket


async def pings_until_closed(reader: asyncio.StreamReader) -> tuple[int, int]:
    """Read server frames, never answering a ping, until the socket ends: (pings seen, close
    code; 1006 when it ended without a close frame, as the keepalive timeout does)."""
    pings = 0
    while True:
        try:
            head = await reader.readexactly(2)
        except asyncio.IncompleteReadError:
            return pings, 1006
        size = head[1] & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await reader.readexactly(8))
        data = await reader.readexactly(size)
        opcode = head[0] & 0x0F
        pings += opcode == 0x9
        if opcode == 0x8:
            code: int = struct.unpack("!H", data[:2])[0]
            return pings, code


async def test_client_twice_over_the_window_during_a_slow_commit_is_not_closed(
    spawn_worker: Callable[..., Worker], db: asyncpg.Connection
) -> None:
    """Sends wait on a conversation lock for longer than the ping timeout; the client wrote
    twice the window and keeps answering pings: it is slowed, not closed (1011)."""
    worker = spawn_worker(CHATD_SEND_WINDOW="4")
    api = Api(worker.url)
    alice, bob, carol = await api.user(), await api.user(), await api.user()
    cid = await api.direct(alice, bob)
    ws = await Ws.connect(worker.url, alice.token)
    lock = db.transaction()
    await lock.start()
    try:
        await db.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", cid)
        for i in range(8):
            await ws.send_json(send_frame(cid, f"k-{alice.id}-{i}", f"m{i}"))
        # Barrier: a socket opened after those sends that never answers a ping is closed by
        # the keepalive; the ping timeout has then passed for the sender's socket too.
        silent, writer = await silent_socket(worker.port, carol.token)
        pings, code = await asyncio.wait_for(pings_until_closed(silent), 30)
        writer.close()
        assert pings >= 1 and code in (1006, 1011)
        assert ws.close_code is None
    finally:
        await lock.rollback()
    acks = await replies(ws, 8)
    assert [(a["type"], a["seq"]) for a in acks] == [("ack", i + 1) for i in range(8)]
    await ws.send_json({"type": "ping"})
    assert (await replies(ws, 1))[0]["type"] == "pong"
    assert ws.close_code is None
    await ws.close()
