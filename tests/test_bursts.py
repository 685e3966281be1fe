"""Bursts larger than a worker's connection pools wait for a connection; none is refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.conftest import Worker
from tests.helpers import Api, Ws, ack_for


async def test_burst_beyond_the_redis_pool_queues_instead_of_failing(
    spawn_worker: Callable[..., Worker],
) -> None:
    # Two Redis connections: the subscriber holds one, every other command shares the other.
    worker = spawn_worker(CHATD_REDIS_POOL_MAX="2")
    api = Api(worker.url)
    owner = await api.user()
    members = [await api.user() for _ in range(20)]
    cid = await api.group(owner, members)
    sockets = [await Ws.connect(worker.url, m.token) for m in members]
    sender = await Ws.connect(worker.url, owner.token)
    ack = await sender.send(cid, "read me")
    for ws in sockets:
        await ws.wait_seq(cid, ack["seq"])

    async def burst(n: int, ws: Ws) -> list[dict[str, object]]:
        mark = {"type": "read", "conversation_id": cid, "seq": ack["seq"], "id": f"r{n}"}
        send = {"type": "send", "conversation_id": cid, "client_msg_id": f"b{n}", "body": "x", "id": f"s{n}"}
        await asyncio.gather(ws.send_json(mark), ws.send_json(send))
        read = await ws.expect(lambda f: f.get("ref") == f"r{n}")
        sent = await ws.expect(ack_for(f"b{n}"))
        return [read, sent]

    replies = await asyncio.gather(*(burst(n, ws) for n, ws in enumerate(sockets)))
    for read, sent in replies:
        assert read["type"] == "read_state" and read["last_read_seq"] == ack["seq"], read
        assert sent["type"] == "ack", sent
    for ws in [sender, *sockets]:
        await ws.close()
    await api.http.aclose()
