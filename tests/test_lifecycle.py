"""Restarts and crashes: SIGTERM drains, Redis restarts, and nothing acknowledged is ever lost."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable

import asyncpg
import websockets

from chatd.devstack import Stack
from tests.conftest import Worker
from tests.helpers import Api, Ws


async def test_sigterm_finishes_sends_then_closes_1012(
    spawn_worker: Callable[..., Worker], db: asyncpg.Connection, w1: Api
) -> None:
    worker = spawn_worker()
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    sender = await Ws.connect(worker.url, alice.token)
    watcher = await Ws.connect(worker.url, bob.token)
    for i in range(200):  # queued on the socket, not awaited
        await sender.send_json(
            {"type": "send", "conversation_id": cid, "client_msg_id": f"t{i}", "body": f"{i}"}
        )
    await sender.expect(lambda f: f["type"] == "ack")  # sends are in flight
    worker.proc.send_signal(signal.SIGTERM)
    assert await sender.wait_closed() == 1012
    assert await watcher.wait_closed() == 1012
    assert worker.proc.wait(20) in (0, -signal.SIGTERM)
    acked = {f["client_msg_id"] for f in sender.frames if f["type"] == "ack"}
    refused = [f for f in sender.frames if f["type"] == "error"]
    assert all(f["code"] == "shutting_down" for f in refused)
    stored = {
        r["client_msg_id"]
        for r in await db.fetch("SELECT client_msg_id FROM messages WHERE conversation_id = $1", cid)
    }
    # Every committed send was acknowledged before the close: nothing is left in doubt.
    assert stored == acked and len(acked) >= 1


async def test_live_delivery_survives_a_redis_restart(stack: Stack, w1: Api, w2: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    b = await Ws.connect(w2.base_url, bob.token)
    await a.send(cid, "before")
    await b.wait_seq(cid, 1)
    stack.restart_redis()
    deadline = time.monotonic() + 20
    ack = await a.send(cid, "after")
    while ack["type"] != "ack" and time.monotonic() < deadline:  # a send may meet the outage
        await asyncio.sleep(0.2)
        ack = await a.send(cid, "after")
    assert ack["type"] == "ack"
    got = await b.wait_seq(cid, ack["seq"], timeout=20)
    assert [f["body"] for f in got] == ["before", "after"]
    await a.close()
    await b.close()


async def test_acknowledged_messages_survive_kill_9_and_postgres_restart(stack: Stack, w1: Api) -> None:
    senders = [await w1.user() for _ in range(8)]
    cid = await w1.group(senders[0], senders[1:])
    per_sender = 40
    acked: dict[str, int] = {}
    urls = [stack.worker_url(i) for i in range(stack.workers)]

    async def sender(index: int) -> None:
        user = senders[index]
        ws: Ws | None = None
        attempt = index
        for n in range(per_sender):
            client_msg_id = f"s{index}-{n}"
            while client_msg_id not in acked:
                try:
                    if ws is None or ws.close_code is not None:
                        attempt += 1
                        ws = await Ws.connect(urls[attempt % len(urls)], user.token, wait_synced=False)
                        if ws.ready.get("type") != "ready":
                            ws = None
                            await asyncio.sleep(0.2)
                            continue
                    reply = await asyncio.wait_for(ws.send(cid, f"{index}:{n}", client_msg_id), 5)
                    if reply["type"] == "ack":
                        acked[client_msg_id] = reply["seq"]
                    else:  # unavailable while Postgres restarts: resend the same id
                        await asyncio.sleep(0.1)
                except (OSError, TimeoutError, ConnectionError, websockets.ConnectionClosed):
                    if ws is not None:
                        with contextlib.suppress(Exception):
                            await ws.close()
                    ws = None
                    await asyncio.sleep(0.2)
        if ws is not None:
            await ws.close()

    async def chaos() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(1.0)
        for index in range(stack.workers):
            stack.stop_worker(index, signal.SIGKILL)
        await asyncio.sleep(0.3)
        await loop.run_in_executor(None, stack.restart_postgres)
        for index in range(stack.workers):
            await loop.run_in_executor(None, stack.start_worker, index)
        await asyncio.sleep(1.0)
        for index in range(stack.workers):
            stack.stop_worker(index, signal.SIGKILL)
            await loop.run_in_executor(None, stack.start_worker, index)

    await asyncio.wait_for(asyncio.gather(chaos(), *(sender(i) for i in range(len(senders)))), 240)

    total = per_sender * len(senders)
    assert len(acked) == total
    db = await asyncpg.connect(stack.database_url)  # the restart closed every earlier connection
    rows = await db.fetch(
        "SELECT seq, client_msg_id FROM messages WHERE conversation_id = $1 ORDER BY seq", cid
    )
    await db.close()
    assert [r["seq"] for r in rows] == list(range(1, total + 1)), "gapless after crashes"
    stored = {r["client_msg_id"]: r["seq"] for r in rows}
    assert len(stored) == total, "exactly once"
    assert stored == acked, "every ack names the stored seq"
    for index in range(len(senders)):  # each sender's messages in the order it sent them
        seqs = [stored[f"s{index}-{n}"] for n in range(per_sender)]
        assert seqs == sorted(seqs)
    history: list[dict[str, object]] = []
    before = None
    while True:
        page = await w1.history(senders[0], cid, limit=200, **({"before": before} if before else {}))
        history = page + history
        if len(page) < 200:
            break
        before = page[0]["seq"]
    assert [m["client_msg_id"] for m in history] == [r["client_msg_id"] for r in rows]
