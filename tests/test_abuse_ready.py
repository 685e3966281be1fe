"""Issue 19 item 13: a stranger could grow someone's `ready` without limit (3,500 groups naming
the victim, no limit hit; a 1.26 MB `ready` the bundled client, with its 1 MiB frame limit,
could not take). Group creation is limited per user, `ready` comes in pages of bounded size,
and the victim can decline every group they never took part in with one request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
import websockets

from chatd.client import _ready
from chatd.client.session import ChatSession
from chatd.sessions.sync import READY_PAGE
from tests.abuse import Bystander, figures, insert_groups
from tests.conftest import Worker
from tests.helpers import Api, Frame, Ws

LIMIT = 20
CLIENT_MAX_FRAME = 2**20  # the bundled client's limit (chatd.client)


async def test_group_creation_is_limited_per_user(spawn_worker: Callable[..., Worker]) -> None:
    worker = spawn_worker(CHATD_GROUP_RATE_LIMIT=str(LIMIT))
    api = Api(worker.url)
    stranger, victim, other = await api.user("str"), await api.user("vic"), await api.user("oth")
    bystander = await Bystander.join(api, worker.url)
    before = await bystander.latencies(30)
    statuses: list[int] = []

    async def attack() -> None:
        for _ in range(10):  # 10 rounds of 20 at once: far past the limit
            body = {"title": "spam", "usernames": [victim.name]}
            round_ = await asyncio.gather(
                *(api.call("POST", "/v1/conversations/group", stranger.token, body) for _ in range(20))
            )
            statuses.extend(r.status_code for r in round_)
            refused = [r for r in round_ if r.status_code == 429]
            for response in refused:
                error = response.json()["error"]
                assert error["code"] == "rate_limited" and error["retry_after_ms"] > 0, error

    attacking = asyncio.create_task(attack())
    during = await bystander.latencies(30)
    await attacking
    figures("item 13: group creation", before, during)
    assert statuses.count(201) == LIMIT, statuses
    assert statuses.count(429) == len(statuses) - LIMIT
    victim_ws = await Ws.connect(worker.url, victim.token)
    assert len(victim_ws.ready["conversations"]) == LIMIT
    # The limit is the creator's own: someone else still creates groups.
    elsewhere = await api.call("POST", "/v1/conversations/group", other.token, {"title": "ok"})
    assert elsewhere.status_code == 201
    await victim_ws.close()
    await bystander.close()
    await api.http.aclose()


async def frames_until_synced(ws: websockets.ClientConnection) -> list[Frame]:
    found: list[Frame] = []
    async with asyncio.timeout(60):
        while not found or found[-1]["type"] != "synced":
            found.append(orjson.loads(await ws.recv()))
    return found


async def test_ready_comes_in_bounded_pages_the_bundled_client_can_take(
    w1: Api, db: asyncpg.Connection
) -> None:
    stranger, victim, friend = await w1.user("str"), await w1.user("vic"), await w1.user("fr")
    mine = await w1.group(victim, [friend], title="mine")  # one group the victim took part in
    # Titles of the longest kind (200 characters): 3,500 of them made a 1.26 MB `ready`.
    spam = await insert_groups(db, stranger.id, 3500, [victim.id], title="x" * 196)
    everything = sorted([mine, *spam])

    # Raw, with the bundled client's frame limit: `ready`, then `conversations` pages.
    url = w1.base_url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(url, max_size=CLIENT_MAX_FRAME) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": victim.token, "since": {str(mine): 0}}).decode())
        got = await frames_until_synced(ws)
    pages = [f for f in got if f["type"] in ("ready", "conversations")]
    assert pages[0]["type"] == "ready" and all(p["type"] == "conversations" for p in pages[1:])
    assert [p["more"] for p in pages] == [True] * (len(pages) - 1) + [False]
    assert all(len(p["conversations"]) <= READY_PAGE for p in pages)
    listed = [c["id"] for p in pages for c in p["conversations"]]
    assert listed == everything, "every conversation exactly once, ascending"
    assert all({"last_read_seq", "unread", "last_seq"} <= set(c) for p in pages for c in p["conversations"])

    # The terminal client: `list` reads every page, `chat` connects and syncs.
    ready = await _ready(w1.base_url, victim.token)
    assert sorted(c["id"] for c in ready["conversations"]) == everything
    lines: list[str] = []
    profile = {"token": victim.token, "user_id": victim.id}
    names = {victim.id: victim.name, friend.id: friend.name}
    conversation = {"id": mine, "kind": "group", "title": "mine"}
    chat = ChatSession(w1.base_url, profile, conversation, names, lines.append)
    running = asyncio.create_task(chat.run())
    try:
        async with asyncio.timeout(60):
            while not chat.synced:
                assert not running.done(), (running, lines)
                await asyncio.sleep(0.05)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running
    assert any("connected as" in line for line in lines), lines


async def test_decline_every_group_never_taken_part_in_and_leave_in_bulk(
    w1: Api, db: asyncpg.Connection
) -> None:
    stranger, victim, friend = await w1.user("str"), await w1.user("vic"), await w1.user("fr")
    mine = await w1.group(victim, [friend], title="mine")
    theirs = await w1.group(friend, [victim], title="theirs")  # added, never took part
    direct = await w1.direct(stranger, victim)
    spam = await insert_groups(db, stranger.id, 700, [victim.id])
    v = await Ws.connect(w1.base_url, victim.token)

    async def leave(body: dict[str, Any]) -> dict[str, Any]:
        response = await w1.call("POST", "/v1/conversations/leave", victim.token, body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    # Declining takes at most LEAVE_MAX groups per request and says whether more remain.
    first = await leave({"not_taken_part": True})
    assert first["more"] is True and first["ignored"] == []
    second = await leave({"not_taken_part": True})
    assert second["more"] is False
    assert sorted(first["left"] + second["left"]) == sorted([theirs, *spam])
    # The victim's sockets hear each removal; groups they took part in and directs stay.
    await v.expect(lambda f: f["type"] == "message" and f["conversation_id"] == spam[-1], timeout=30)
    again = await Ws.connect(w1.base_url, victim.token)
    assert sorted(c["id"] for c in again.ready["conversations"]) == sorted([mine, direct])
    assert again.ready["more"] is False
    # Leaving by id: groups are left, anything else is listed as ignored.
    other = await w1.group(friend, [victim], title="other")
    explicit = await leave({"conversation_ids": [other, direct, spam[0], 10**15]})
    assert (explicit["left"], sorted(explicit["ignored"])) == ([other], sorted([direct, spam[0], 10**15]))
    assert explicit["more"] is False
    bad_bodies: list[dict[str, Any]] = [{}, {"conversation_ids": []}, {"conversation_ids": ["1"]}]
    for bad in [*bad_bodies, {"not_taken_part": "yes"}]:
        refused = await w1.call("POST", "/v1/conversations/leave", victim.token, bad)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_request", bad
    for ws in (v, again):
        await ws.close()
