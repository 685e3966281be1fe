"""Presence is published once per change, on the user's own channel, and each session follows the
users it may see (issue 19 item 11; protocol.md §4.9). The set follows the conversations live:
someone taking part is followed at once, a member who joins follows those who took part, and a
removal or a group growing past CHATD_PRESENCE_MAX_GROUP_SIZE stops the pushes.

One worker on a Redis of its own: it alone publishes presence, in the order changes happen, so
a later change of someone else is a barrier for an earlier one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis

from tests.conftest import Worker
from tests.helpers import Api, Frame, Ws

MAX_GROUP = 3


def about(uid: int, status: str | None = None) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "presence" and f["user_id"] == uid and status in (None, f["status"])


async def followers(redis: aioredis.Redis, uid: int) -> int:
    """Workers subscribed to the user's presence channel."""
    [(_, count)] = await redis.pubsub_numsub(f"chatd:p:{uid}")
    return int(count)


async def unfollowed(redis: aioredis.Redis, uid: int) -> None:
    for _ in range(100):
        if await followers(redis, uid) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"user {uid}'s presence is still followed")


async def test_taking_part_is_followed_at_once_and_leaving_stops_it(
    spawn_worker: Callable[..., Worker], private_redis: str
) -> None:
    worker = spawn_worker(CHATD_REDIS_URL=private_redis, CHATD_PRESENCE_MAX_GROUP_SIZE=str(MAX_GROUP))
    api = Api(worker.url)
    owner, member, sentinel = await api.user("own"), await api.user("mem"), await api.user("sen")
    cid = await api.group(owner, [member], title="small")
    await api.group(sentinel, [owner], title="barrier")  # the owner follows the sentinel
    o = await Ws.connect(worker.url, owner.token)
    m = await Ws.connect(worker.url, member.token)  # online, not shown: it has not taken part
    assert (await m.send(cid, "hello"))["type"] == "ack"  # now it has: its status is sent
    online = await o.expect(about(member.id, "online"))
    await m.send_json({"type": "presence", "status": "idle"})
    away = await o.expect(about(member.id, "away"))
    assert away["version"] > online["version"]

    # The member leaves: the owner's session stops following it, and its changes stop.
    left = await api.call("DELETE", f"/v1/conversations/{cid}/members/{member.id}", member.token)
    assert left.status_code == 200
    await m.close()
    await unfollowed(aioredis.Redis.from_url(private_redis), member.id)
    back = await Ws.connect(worker.url, member.token)  # online again: not the owner's business
    s = await Ws.connect(worker.url, sentinel.token)  # a later change the owner does see
    await o.expect(about(sentinel.id, "online"))
    assert [f for f in o.frames if about(member.id)(f)] == [online, away]
    for ws in (o, back, s):
        await ws.close()
    await api.http.aclose()


async def test_joining_follows_who_took_part_and_a_group_past_the_limit_stops(
    spawn_worker: Callable[..., Worker], private_redis: str
) -> None:
    worker = spawn_worker(CHATD_REDIS_URL=private_redis, CHATD_PRESENCE_MAX_GROUP_SIZE=str(MAX_GROUP))
    api = Api(worker.url)
    owner, newcomer, sentinel = [await api.user(p) for p in ("own", "new", "sen")]
    extras = [await api.user("ext") for _ in range(2)]
    cid = await api.group(owner, [], title="small")
    await api.group(sentinel, [newcomer], title="barrier")  # the newcomer follows the sentinel
    o = await Ws.connect(worker.url, owner.token)
    n = await Ws.connect(worker.url, newcomer.token)
    added = await api.call(
        "POST", f"/v1/conversations/{cid}/members", owner.token, {"usernames": [newcomer.name]}
    )
    assert added.status_code == 200
    # Added while connected: the owner (who took part) is followed, its status sent.
    await n.expect(lambda f: f["type"] == "conversation_added" and f["conversation"]["id"] == cid)
    seen = await n.expect(about(owner.id, "online"))
    # The group grows past the limit (2 members, then 4 > 3): no presence through it any more.
    more = await api.call(
        "POST", f"/v1/conversations/{cid}/members", owner.token, {"usernames": [e.name for e in extras]}
    )
    assert more.status_code == 200
    await n.wait_seq(cid, more.json()["event"]["seq"])
    redis = aioredis.Redis.from_url(private_redis)
    await o.close()  # the owner's own session followed itself too
    await unfollowed(redis, owner.id)
    again = await Ws.connect(worker.url, owner.token)  # its change is not pushed to the newcomer
    s = await Ws.connect(worker.url, sentinel.token)
    await n.expect(about(sentinel.id, "online"))
    assert [f for f in n.frames if about(owner.id)(f)] == [seen]
    await redis.aclose()
    for ws in (n, again, s):
        await ws.close()
    await api.http.aclose()
