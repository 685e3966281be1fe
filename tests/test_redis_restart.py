"""Redis restarts (issue 19 item 3): a restart that is over is invisible to clients.

Two workers share a Redis of their own, restarted as `systemctl restart` does it (SIGTERM, then
a fresh start, empty). Right after, every worker's pooled connections are stale; the first
connections and requests on each worker must still succeed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

from tests.conftest import RedisServer, Worker
from tests.helpers import Api, User, Ws


async def use(worker: Worker, user: User, peer: User) -> list[str]:
    """Connect, sync, send, mark read, then ask for presence and read state over HTTP; every failure."""
    problems = []
    api = Api(worker.url)
    try:
        ws = await Ws.connect(worker.url, user.token, wait_synced=False)
        try:
            await ws.expect(lambda f: f["type"] == "synced")
            cid = ws.ready["conversations"][0]["id"]
            ack = await ws.send(cid, "hello")
            reply = await ws.read(cid, ack["seq"]) if ack["type"] == "ack" else ack
            if reply["type"] != "read_state":
                problems.append(f"send, read: {reply}")
        except ConnectionError:
            problems.append(f"socket closed {ws.close_code}: {ws.frames[-1:]}")
        finally:
            await ws.close()
        presence = await api.call("POST", "/v1/presence", user.token, {"user_ids": [peer.id]})
        state = await api.call("GET", "/v1/me/read_state", user.token)
        for response in (presence, state):
            if response.status_code != 200:
                problems.append(f"{response.request.url.path}: {response.status_code} {response.text}")
    finally:
        await api.http.aclose()
    return problems


async def test_the_first_connections_and_requests_after_a_redis_restart_succeed_on_every_worker(
    spawn_worker: Callable[..., Worker], redis_server: RedisServer
) -> None:
    workers = [spawn_worker(CHATD_REDIS_URL=redis_server.url) for _ in range(2)]
    api = Api(workers[0].url)
    users = [await api.user() for _ in range(12)]
    for a, b in itertools.pairwise([*users, users[0]]):
        await api.direct(a, b)
    await api.http.aclose()
    peers = users[1:] + users[:1]

    async def round_on_every_worker() -> list[str]:
        pairs = enumerate(zip(users, peers, strict=True))
        found = await asyncio.gather(*(use(workers[i % 2], user, peer) for i, (user, peer) in pairs))
        return [problem for problems in found for problem in problems]

    # Concurrent use fills each worker's pool with connections, which the restart makes stale.
    started = time.monotonic()
    assert await round_on_every_worker() == []
    print(f"a round before the restart took {time.monotonic() - started:.2f}s")
    redis_server.restart()
    restarted = time.monotonic()
    problems = await round_on_every_worker()
    print(f"first round after the restart took {time.monotonic() - restarted:.2f}s")
    assert problems == [], problems
