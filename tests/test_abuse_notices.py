"""Issue 19 item 14: one request naming 10,000 users must not overflow the outbox (10,001
per-user notices used to drop one and make every worker resync); a big fan-out of notices is a
few publishes, each worker hands it to its own connections."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import asyncpg
import redis.asyncio as aioredis

from chatd.fanout import USERS_PER_NOTICE
from tests.abuse import Bystander, command_calls, figures, insert_users
from tests.conftest import Worker
from tests.helpers import Api, Ws

NAMED = 10_000


async def test_a_group_naming_ten_thousand_users_costs_a_few_publishes_and_no_resync(
    spawn_worker: Callable[..., Worker], private_redis: str, db: asyncpg.Connection
) -> None:
    env = {"CHATD_REDIS_URL": private_redis, "CHATD_MAX_HTTP_BODY_BYTES": str(4 << 20)}
    first, second = spawn_worker(**env), spawn_worker(**env)
    api = Api(first.url)
    creator = await api.user("big")
    named = await insert_users(db, NAMED)
    # Some of the named users are connected, on both workers: they must still be told.
    watching = [await Ws.connect((first, second)[i % 2].url, u.token) for i, u in enumerate(named[:6])]
    bystander = await Bystander.join(api, first.url)
    redis = aioredis.Redis.from_url(private_redis)
    control = redis.pubsub()
    await control.subscribe("chatd:ctl")
    try:
        before = await bystander.latencies(50)
        publishes = await command_calls(redis, "publish")

        async def create() -> int:
            body = {"title": "everyone", "usernames": [u.name for u in named]}
            response = await api.call("POST", "/v1/conversations/group", creator.token, body)
            assert response.status_code == 201, response.text
            cid: int = response.json()["id"]
            return cid

        created = asyncio.create_task(create())
        during = await bystander.latencies(50)
        cid = await created
        # Every bystander send is one publish of its own.
        per_group = await command_calls(redis, "publish") - publishes - len(during)
        figures("item 14", before, during)
        for ws in watching:
            added = await ws.expect(lambda f: f["type"] == "conversation_added", timeout=30)
            assert added["conversation"]["id"] == cid
            assert added["conversation"]["member_count"] == NAMED + 1

        # Barrier: a sentinel published now reaches this subscriber after anything published
        # before it, so a `resync` asked for by either worker would be among what came first.
        await redis.publish("chatd:ctl", b"sentinel")
        seen: list[bytes] = []
        async with asyncio.timeout(10):
            while not seen or seen[-1] != b"sentinel":
                message = await control.get_message(timeout=1)
                if message is not None and message["type"] == "message":
                    seen.append(message["data"])
        assert b"resync" not in seen, "a worker dropped notices and asked everyone to resync"
        # 10,001 users are told in ceil(10,001 / USERS_PER_NOTICE) publishes, not one each.
        assert per_group <= math.ceil((NAMED + 1) / USERS_PER_NOTICE) + 1, per_group
    finally:
        await control.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
    for ws in watching:
        await ws.close()
    await bystander.close()
    await api.http.aclose()
