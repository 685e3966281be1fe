"""Presence fan-out is bounded: no pushes to conversations above CHATD_PRESENCE_MAX_GROUP_SIZE.

The worker runs against a Redis of its own, so that it alone applies and publishes presence
transitions (the session's workers, with the default threshold, would sweep them too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.conftest import Worker
from tests.helpers import Api, Frame, Ws

MAX_GROUP = 3


def about(uid: int, status: str | None = None) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "presence" and f["user_id"] == uid and status in (None, f["status"])


async def status_of(api: Api, token: str, uid: int) -> str:
    response = await api.call("POST", "/v1/presence", token, {"user_ids": [uid]})
    assert response.status_code == 200, response.text
    assert response.json()["hidden"] == [], "a co-member who took part is always queryable"
    found: str = response.json()["presence"][0]["status"]
    return found


async def test_big_group_gets_no_presence_pushes_but_may_query_small_ones_are_pushed(
    spawn_worker: Callable[..., Worker], private_redis: str
) -> None:
    worker = spawn_worker(CHATD_REDIS_URL=private_redis, CHATD_PRESENCE_MAX_GROUP_SIZE=str(MAX_GROUP))
    api = Api(worker.url)
    observer, big, small, filler1, filler2 = [await api.user() for _ in range(5)]
    # `big` created a group of 4 (> 3) with the observer: it took part, so consent is not
    # what keeps its presence from being pushed. `small` created a group of 3 with them.
    await api.group(big, [observer, filler1, filler2], title="big")
    await api.group(small, [observer, filler1], title="small")

    o = await Ws.connect(worker.url, observer.token)
    snapshot = {p["user_id"] for p in o.ready["presence"]}
    assert small.id in snapshot, "the snapshot lists whose changes are pushed"
    assert big.id not in snapshot, "and only those"

    b = await Ws.connect(worker.url, big.token)  # online, queued for publishing first
    s = await Ws.connect(worker.url, small.token)  # online, queued after it
    # Barrier: this worker publishes its presence changes in the order they happened, on one
    # subscriber connection, so `small`'s event arrives after any event about `big` would.
    await o.expect(about(small.id, "online"))
    assert [f for f in o.frames if about(big.id)(f)] == [], "pushed to a group above the threshold"
    assert await status_of(api, observer.token, big.id) == "online"

    await b.close()
    for _ in range(150):  # `big` is offline (after the grace) before `small` closes
        if await status_of(api, observer.token, big.id) == "offline":
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("`big` never went offline")
    await s.close()  # goes offline a grace period later, published after `big`'s offline
    await o.expect(about(small.id, "offline"), timeout=15)
    assert [f for f in o.frames if about(big.id)(f)] == [], "pushed to a group above the threshold"
    await o.close()
    await api.http.aclose()
