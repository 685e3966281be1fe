"""A client that reads slowly but keeps reading is paced, never dropped (issue 19 item 18).

docs/protocol.md §4.1: catch-up is paced by the reader. The keepalive (§4.7) must not close a
client whose pong is stuck behind frames it has not read yet, and what it sends meanwhile is
answered. Scaled down: a 0.5 s ping and a 2 s pong timeout against a client reading 100
frames a second through an 8 KiB receive buffer, for about 15 s.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import asyncpg
import orjson
import websockets

from tests.conftest import Worker
from tests.helpers import Api, seed_history, ws_url

MESSAGES = 1500
BODY = "slow reader " * 16  # about 300 bytes a frame on the wire


async def test_a_slow_reader_is_paced_through_a_large_catch_up_and_never_dropped(
    spawn_worker: Callable[..., Worker], db: asyncpg.Connection
) -> None:
    worker = spawn_worker(CHATD_PRESENCE_HEARTBEAT_S="0.5", CHATD_PRESENCE_TTL_S="2")
    api = Api(worker.url)
    alice, bob = await api.user(), await api.user()
    cid = await api.direct(alice, bob)
    await api.direct(bob, alice)  # bob opened it too: alice may see his presence (§4.9)
    await seed_history(db, cid, alice.id, [BODY] * MESSAGES)

    # A raw client with a small fixed receive buffer that takes one frame every 10 ms: the
    # server's pings reach it only as fast as it reads what was sent before them.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024)
    sock.connect(("127.0.0.1", worker.port))
    sock.setblocking(False)
    slow = await websockets.connect(ws_url(worker.url), sock=sock, max_queue=4, compression=None)
    await slow.send(orjson.dumps({"type": "auth", "token": bob.token, "since": {str(cid): 0}}).decode())
    started = time.monotonic()
    seqs: list[int] = []
    statuses: set[str] = set()
    ack = None
    synced = False
    try:
        while not (synced and ack is not None):
            frame = orjson.loads(await asyncio.wait_for(slow.recv(), 10))
            if frame["type"] == "message":
                seqs.append(frame["seq"])
            elif frame["type"] == "synced":
                synced = True
            elif frame["type"] in ("ack", "error") and frame.get("client_msg_id") == "during":
                ack = frame
            if len(seqs) % 250 == 0 and frame["type"] == "message":
                if len(seqs) == 250:  # mid catch-up: a send, answered once it is done
                    await slow.send(
                        orjson.dumps(
                            {"type": "send", "conversation_id": cid, "client_msg_id": "during", "body": "hi"}
                        ).decode()
                    )
                response = await api.call("POST", "/v1/presence", alice.token, {"user_ids": [bob.id]})
                statuses.add(response.json()["presence"][0]["status"])
            await asyncio.sleep(0.01)
    except websockets.ConnectionClosed:
        pass
    took = time.monotonic() - started
    print(f"read {len(seqs)} messages in {took:.1f}s; close code {slow.close_code}; presence seen {statuses}")
    assert slow.close_code is None, (
        f"closed {slow.close_code} {slow.close_reason!r} after {len(seqs)} messages"
    )
    assert seqs == list(range(1, MESSAGES + 2))  # the catch-up, then bob's own message
    assert ack is not None and ack["type"] == "ack" and ack["seq"] == MESSAGES + 1, ack
    assert statuses == {"online"}
    await slow.send(orjson.dumps({"type": "ping"}).decode())
    while orjson.loads(await asyncio.wait_for(slow.recv(), 10))["type"] != "pong":
        pass
    await slow.close()
    await api.http.aclose()
