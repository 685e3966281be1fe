"""Per-user notices are rebuilt from Postgres after a worker's Redis subscriber was away.

Redis pub/sub keeps nothing for an absent subscriber: a `conversation_added` published while a
worker could not subscribe is gone. The worker under test logs in to a Redis of its own as an
ACL user the test can disable; another worker (the default user) makes the change meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from tests.conftest import Worker
from tests.helpers import Api, Ws


async def test_user_added_while_the_subscriber_is_away_gets_conversation_added_after_it_returns(
    spawn_worker: Callable[..., Worker], private_redis: str
) -> None:
    admin = aioredis.Redis.from_url(private_redis)
    await admin.execute_command("ACL", "SETUSER", "cut", "on", ">cut-password", "~*", "&*", "+@all")  # type: ignore[no-untyped-call]
    port = urlsplit(private_redis).port
    cut = spawn_worker(CHATD_REDIS_URL=f"redis://cut:cut-password@127.0.0.1:{port}/0")
    other = spawn_worker(CHATD_REDIS_URL=private_redis)
    api = Api(other.url)
    owner, member = await api.user(), await api.user()
    cid = await api.group(owner, [], title="later")
    m = await Ws.connect(cut.url, member.token)
    assert [c["id"] for c in m.ready["conversations"]] == []

    watcher = admin.pubsub()
    await watcher.subscribe(f"chatd:u:{member.id}")
    try:
        # The worker's subscriber (and every other connection of it) drops and cannot log in again.
        await admin.execute_command("ACL", "SETUSER", "cut", "off")  # type: ignore[no-untyped-call]
        await admin.execute_command("CLIENT", "KILL", "USER", "cut")  # type: ignore[no-untyped-call]
        added = await api.call(
            "POST", f"/v1/conversations/{cid}/members", owner.token, {"usernames": [member.name]}
        )
        assert added.status_code == 200, added.text
        # Barrier: the notice has been published (to nobody on the worker under test).
        async with asyncio.timeout(10):
            while (message := await watcher.get_message(timeout=1)) is None or message["type"] != "message":
                pass
        await admin.execute_command("ACL", "SETUSER", "cut", "on")  # type: ignore[no-untyped-call]
        notice = await m.expect(lambda f: f["type"] == "conversation_added", timeout=15)
        assert notice["conversation"]["id"] == cid
        joined = await m.expect(lambda f: f["type"] == "message" and f["conversation_id"] == cid)
        assert (joined["kind"], joined["user_ids"]) == ("members_added", [member.id])
        # Live again: the next message arrives too.
        o = await Ws.connect(other.url, owner.token)
        ack = await o.send(cid, "welcome")
        await m.wait_seq(cid, ack["seq"])
        assert [f["seq"] for f in m.messages(cid)] == [joined["seq"], ack["seq"]]
        await o.close()
    finally:
        await admin.execute_command("ACL", "SETUSER", "cut", "on")  # type: ignore[no-untyped-call]
        await watcher.aclose()  # type: ignore[no-untyped-call]
        await admin.aclose()
    await m.close()
    await api.http.aclose()
