"""The send queue (CHATD_SEND_QUEUE_FRAMES) bounds what a worker holds for one socket: a client
that reads is paced through a catch-up of any size; one that stops reading is closed with 4008."""

from __future__ import annotations

import socket
from collections.abc import Callable

import orjson
import websockets

from tests.conftest import Worker
from tests.helpers import Api, User, Ws, ack_for, ws_url

QUEUE = 10  # the smallest send queue CHATD_SEND_QUEUE_FRAMES allows
BIG = "x" * 60_000


def small_queue_worker(spawn_worker: Callable[..., Worker]) -> Worker:
    # A stalled client must be closed for its queue, not for a ping timeout: pings are rare here.
    return spawn_worker(
        CHATD_SEND_QUEUE_FRAMES=str(QUEUE),
        CHATD_MAX_MESSAGE_CHARS=str(len(BIG)),
        CHATD_PRESENCE_TTL_S="120",
        CHATD_PRESENCE_HEARTBEAT_S="60",
    )


async def sender_with_history(
    spawn_worker: Callable[..., Worker], count: int, body: str
) -> tuple[Worker, Api, User, Ws, int]:
    """A small-queue worker and a direct conversation in which alice has sent `count` messages;
    returns bob (not yet connected), alice's socket and the conversation."""
    worker = small_queue_worker(spawn_worker)
    api = Api(worker.url)
    alice, bob = await api.user(), await api.user()
    cid = await api.direct(alice, bob)
    a = await Ws.connect(worker.url, alice.token)
    await send_many(a, cid, count, body, "pre")
    return worker, api, bob, a, cid


async def send_many(ws: Ws, cid: int, count: int, body: str, prefix: str) -> None:
    for start in range(0, count, 50):  # at most 50 sends unacknowledged
        last = min(start + 50, count)
        for n in range(start, last):
            await ws.send_json(
                {"type": "send", "conversation_id": cid, "client_msg_id": f"{prefix}{n}", "body": body}
            )
        await ws.expect(ack_for(f"{prefix}{last - 1}"), timeout=60)


async def test_a_catch_up_larger_than_the_send_queue_reaches_a_client_that_reads(
    spawn_worker: Callable[..., Worker],
) -> None:
    worker, api, bob, a, cid = await sender_with_history(spawn_worker, 6 * QUEUE, "m")
    b = await Ws.connect(worker.url, bob.token, since={cid: 0}, wait_synced=False)
    got = await b.wait_seq(cid, 6 * QUEUE, timeout=60)
    assert [f["seq"] for f in got] == list(range(1, 6 * QUEUE + 1))
    await b.send_json({"type": "ping"})
    await b.expect(lambda f: f["type"] == "pong")  # still open
    for ws in (a, b):
        await ws.close()
    await api.http.aclose()


async def test_a_client_that_stops_reading_during_a_large_catch_up_is_closed_4008(
    spawn_worker: Callable[..., Worker],
) -> None:
    # More than the socket buffers hold: the catch-up must wait for a client that reads.
    worker, api, bob, a, cid = await sender_with_history(spawn_worker, 150, BIG)
    # Bob asks for all of it and then reads nothing: the client library stops reading the
    # socket once a few frames wait unread (max_queue), so TCP pushes back on the worker. A
    # fixed receive buffer keeps the kernel from growing it to hold the whole catch-up, and no
    # compression keeps the frames as large on the wire as they are.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", worker.port))
    sock.setblocking(False)
    slow = await websockets.connect(
        ws_url(worker.url), sock=sock, max_size=2**24, max_queue=4, compression=None
    )
    await slow.send(orjson.dumps({"type": "auth", "token": bob.token, "since": {str(cid): 0}}).decode())
    live = 0
    while "slow consumer" not in worker.log.read_text():  # the worker logs the close
        assert live < 20 * QUEUE, "live events for a stalled catch-up pile up without bound"
        assert (await a.send(cid, f"live{live}"))["type"] == "ack"
        live += 1
    seqs = []
    try:
        async for raw in slow:
            frame = orjson.loads(raw)
            if frame["type"] == "message":
                seqs.append(frame["seq"])
    except websockets.ConnectionClosed:
        pass
    assert slow.close_code == 4008
    assert seqs == list(range(1, len(seqs) + 1)), "what was delivered has no gap"
    await a.close()
    await api.http.aclose()
