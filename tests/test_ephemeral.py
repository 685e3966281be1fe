"""Ephemeral state (presence, typing, read counts): one bounded attempt, dropped and counted on
failure, a newer value replaces one not yet sent, and a failure never reaches the caller."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from chatd.ephemeral import Ephemeral
from tests.conftest import Worker
from tests.helpers import Api, Frame, Ws


def dropped() -> float:
    return REGISTRY.get_sample_value("chatd_ephemeral_dropped_total") or 0.0


async def test_dropped_and_counted_when_redis_refuses_and_the_latest_value_wins(private_redis: str) -> None:
    redis = aioredis.Redis.from_url(private_redis)
    listener = redis.pubsub()
    await listener.subscribe("state")
    confirmed = await listener.get_message(timeout=5)
    assert confirmed is not None and confirmed["type"] == "subscribe"
    state = Ephemeral(redis, timeout_s=0.5)
    state.start()
    try:
        await redis.execute_command("ACL", "SETUSER", "default", "-publish")  # type: ignore[no-untyped-call]
        before = dropped()
        assert await state.publish([("state", "lost")]) is False
        assert dropped() == before + 1
        await redis.execute_command("ACL", "SETUSER", "default", "+publish")  # type: ignore[no-untyped-call]
        old = state.publish([("state", "old")], key="user-1")
        new = state.publish([("state", "new")], key="user-1")  # replaces `old`, not yet sent
        after = state.publish([("state", "after")])
        assert (await old, await new, await after) == (True, True, True)
        received: list[bytes] = []
        while not received or received[-1] != b"after":  # barrier: the last value published
            message = await listener.get_message(timeout=5)
            assert message is not None
            if message["type"] == "message":
                received.append(message["data"])
        assert received == [b"new", b"after"], "the refused value is not retried, `old` never sent"
    finally:
        await state.stop()
        await listener.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()


def about(uid: int, status: str) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "presence" and f["user_id"] == uid and f["status"] == status


async def test_a_presence_change_redis_does_not_take_neither_fails_the_connect_nor_is_lost(
    spawn_worker: Callable[..., Worker], private_redis: str
) -> None:
    # Redis refuses PUBLISH (an ACL change, a replica, no pool connection in time) while
    # everything else works: the connect goes on, and the sweeper publishes the transition
    # later from the pending set.
    worker = spawn_worker(CHATD_REDIS_URL=private_redis)
    api = Api(worker.url)
    user, observer = await api.user(), await api.user()
    await api.direct(user, observer)
    o = await Ws.connect(worker.url, observer.token)
    admin = aioredis.Redis.from_url(private_redis)
    try:
        await admin.execute_command("ACL", "SETUSER", "default", "-publish")  # type: ignore[no-untyped-call]
        u = await Ws.connect(worker.url, user.token)
        assert u.ready["type"] == "ready"
        await admin.execute_command("ACL", "SETUSER", "default", "+publish")  # type: ignore[no-untyped-call]
        await o.expect(about(user.id, "online"), timeout=15)
    finally:
        await admin.execute_command("ACL", "SETUSER", "default", "+publish")  # type: ignore[no-untyped-call]
        await admin.aclose()
    await u.close()
    await o.close()
    await api.http.aclose()
