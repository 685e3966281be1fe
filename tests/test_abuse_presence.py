"""Issue 19 item 11: one user pinned a worker's CPU with presence frames. Each idle/active flip
was published to every small conversation the user took part in (2,000 one-member groups:
2,000 publishes, received back and parsed, per flip), and `typing` to 2,000 conversations went
out at one a second each. A change now costs one publish whatever the number of conversations,
and each connection's presence and typing frames are limited.

The worker runs on a Redis of its own, so that its commands can be counted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import redis.asyncio as aioredis

from tests.abuse import Bystander, command_calls, figures, insert_groups
from tests.conftest import Worker
from tests.helpers import Api, Frame, User, Ws

GROUPS = 2000
FLIPS = 100
LIMIT = 10  # the default CHATD_PRESENCE_FRAME_RATE_LIMIT and CHATD_TYPING_FRAME_RATE_LIMIT


def presence_of(uid: int) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "presence" and f["user_id"] == uid


async def status(api: Api, viewer: User, uid: int) -> Frame:
    response = await api.call("POST", "/v1/presence", viewer.token, {"user_ids": [uid]})
    assert response.status_code == 200, response.text
    [found] = response.json()["presence"]
    entry: Frame = found
    return entry


async def test_presence_flips_cost_one_publish_each_and_are_limited_per_connection(
    spawn_worker: Callable[..., Worker], private_redis: str, db: asyncpg.Connection
) -> None:
    worker = spawn_worker(CHATD_REDIS_URL=private_redis)
    api = Api(worker.url)
    attacker, watcher = await api.user("att"), await api.user("wat")
    await insert_groups(db, attacker.id, GROUPS)
    shared = await api.group(attacker, [watcher], title="small")  # the watcher may see them
    w = await Ws.connect(worker.url, watcher.token)
    a = await Ws.connect(worker.url, attacker.token)
    await w.expect(presence_of(attacker.id))  # online
    bystander = await Bystander.join(api, worker.url)
    redis = aioredis.Redis.from_url(private_redis)
    before = await bystander.latencies(40)

    async def flip() -> None:
        for i in range(FLIPS):
            await a.send_json({"type": "presence", "status": "idle" if i % 2 == 0 else "active"})
        await a.send_json({"type": "presence", "status": "idle"})  # the last word: idle
        assert (await a.send(shared, "done"))["type"] == "ack"  # every frame before it was taken

    publishes = await command_calls(redis, "publish")
    flipping = asyncio.create_task(flip())
    during = await bystander.latencies(40)
    await flipping
    figures("item 11: presence flips", before, during)
    # Whatever was limited is applied at the end of its window: the last status asked for wins.
    # Until then the attacker shows the last status applied within the limit (active).
    applied = await status(api, watcher, attacker.id)

    def last_word(f: Frame) -> bool:
        if not presence_of(attacker.id)(f):
            return False
        if applied["status"] == "away":  # the window had already ended
            return bool(f["version"] == applied["version"])
        return bool(f["status"] == "away" and f["version"] > applied["version"])

    final = await w.expect(last_word, timeout=30)
    changes = [f for f in w.frames if presence_of(attacker.id)(f)]
    spent = await command_calls(redis, "publish") - publishes - len(during) - 2  # the sends
    print(f"[item 11] {FLIPS + 1} presence frames -> {len(changes) - 1} changes, {spent} publishes")
    assert changes[-1] == final
    assert len(changes) - 1 <= 2 * (LIMIT + 1), "presence frames are limited per connection"
    # One publish per change, whatever the number of the attacker's conversations.
    assert spent <= 2 * len(changes), spent
    for ws in (w, a):
        await ws.close()
    await bystander.close()
    await redis.aclose()
    await api.http.aclose()


async def test_typing_to_many_conversations_is_limited_per_connection(
    spawn_worker: Callable[..., Worker], private_redis: str, db: asyncpg.Connection
) -> None:
    worker = spawn_worker(CHATD_REDIS_URL=private_redis)
    api = Api(worker.url)
    attacker = await api.user("att")
    cids = await insert_groups(db, attacker.id, GROUPS)
    sockets = [await Ws.connect(worker.url, attacker.token) for _ in range(5)]
    bystander = await Bystander.join(api, worker.url)
    redis = aioredis.Redis.from_url(private_redis)
    before = await bystander.latencies(40)

    async def spam(ws: Ws) -> None:
        for cid in cids:
            await ws.send_json({"type": "typing", "conversation_id": cid})
        await ws.send_json({"type": "ping", "id": "after"})
        await ws.expect(lambda f: f["type"] == "pong")  # every typing frame before it was taken

    publishes = await command_calls(redis, "publish")
    spamming = asyncio.gather(*(spam(ws) for ws in sockets))
    during = await bystander.latencies(40)
    await spamming
    figures("item 11: typing to 2,000 conversations from 5 sockets", before, during)
    relayed = await command_calls(redis, "publish") - publishes - len(during)
    print(f"[item 11] {5 * GROUPS} typing frames -> {relayed} relayed")
    # Per connection at most LIMIT a window: the frames took a few windows at most.
    assert relayed <= 5 * LIMIT * 3, relayed
    for ws in sockets:
        await ws.close()
    await bystander.close()
    await redis.aclose()
    await api.http.aclose()
