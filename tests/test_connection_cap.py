"""A user's WebSockets are capped across all workers (close 4009 after auth)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis

from chatd.devstack import Stack
from tests.conftest import Worker
from tests.helpers import Api, Ws


async def test_connections_per_user_are_capped_across_workers(
    w1: Api, stack: Stack, spawn_worker: Callable[..., Worker]
) -> None:
    capped = spawn_worker(CHATD_MAX_CONNECTIONS_PER_USER="3")
    user, other = await w1.user(), await w1.user()
    first = [await Ws.connect(w1.base_url, user.token) for _ in range(2)]  # another worker
    third = await Ws.connect(capped.url, user.token)
    assert third.ready["type"] == "ready"
    fourth = await Ws.connect(capped.url, user.token, wait_synced=False)
    assert fourth.ready["type"] == "error" and fourth.ready["code"] == "too_many_connections"
    assert await fourth.wait_closed() == 4009
    unrelated = await Ws.connect(capped.url, other.token)
    assert unrelated.ready["type"] == "ready", "the cap is per user"
    await first[0].close()  # a closed connection stops counting at once (grace does not count)
    # Barrier: the client's close returns before the worker has handled it; wait until that
    # worker has moved the connection to its presence grace period.
    redis = aioredis.Redis.from_url(stack.redis_url)
    for _ in range(1000):
        if await redis.scard(f"chatd:pgrace:{user.id}"):
            break
        await asyncio.sleep(0.01)
    await redis.aclose()
    again = await Ws.connect(capped.url, user.token)
    assert again.ready["type"] == "ready"
    for ws in (*first[1:], third, unrelated, again):
        await ws.close()


async def test_a_burst_of_sockets_on_two_workers_gets_exactly_the_cap(
    w1: Api, spawn_worker: Callable[..., Worker]
) -> None:
    workers = [spawn_worker(CHATD_MAX_CONNECTIONS_PER_USER="5") for _ in range(2)]
    user = await w1.user()
    burst = await asyncio.gather(
        *(Ws.connect(workers[i % 2].url, user.token, wait_synced=False) for i in range(40))
    )
    opened = [ws for ws in burst if ws.ready["type"] == "ready"]
    refused = [ws for ws in burst if ws.ready["type"] != "ready"]
    assert (len(opened), len(refused)) == (5, 35)
    assert {await ws.wait_closed() for ws in refused} == {4009}
    for ws in opened:
        await ws.close()
