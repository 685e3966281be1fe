"""Presence needs consent: a user's status is shared only through conversations they took part in
(created, opened, or sent a message in), and adding users by id does not reveal which ids exist."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.conftest import Worker
from tests.helpers import Api, Frame, User, Ws, ack_for

# Each test runs against one Redis and against a Redis Cluster (conftest.py).
pytestmark = pytest.mark.both_redis


def about(uid: int) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "presence" and f["user_id"] == uid


async def presence_of(api: Api, viewer: User, uid: int) -> dict[str, object]:
    response = await api.call("POST", "/v1/presence", viewer.token, {"user_ids": [uid]})
    assert response.status_code == 200, response.text
    found: dict[str, object] = response.json()
    return found


async def test_pulling_a_stranger_into_a_group_or_direct_shows_no_presence(w1: Api, w2: Api) -> None:
    mallory, victim = await w1.user("mal"), await w1.user("vic")
    group = await w1.call(
        "POST", "/v1/conversations/group", mallory.token, {"title": "trap", "usernames": [victim.name]}
    )
    assert group.status_code == 201, group.text
    gid = group.json()["id"]
    direct = await w1.call("POST", "/v1/conversations/direct", mallory.token, {"username": victim.name})
    assert direct.status_code == 201, direct.text
    m = await Ws.connect(w2.base_url, mallory.token)
    v = await Ws.connect(w1.base_url, victim.token)  # online: announced before its `ready`
    # Barrier: a message published after the victim's presence change, on the same subscriber.
    cmid = uuid.uuid4().hex
    await m.send_json({"type": "send", "conversation_id": gid, "client_msg_id": cmid, "body": "hi"})
    await m.expect(lambda f: f["type"] == "message" and f["client_msg_id"] == cmid)
    assert [f for f in m.frames if about(victim.id)(f)] == [], "live event leaked"
    late = await Ws.connect(w2.base_url, mallory.token)
    assert all(p["user_id"] != victim.id for p in late.ready["presence"]), "snapshot leaked"
    assert (await presence_of(w1, mallory, victim.id))["hidden"] == [victim.id], "query leaked"

    # Once the victim speaks in the group, they have taken part: visible on every path.
    assert (await v.send(gid, "hello"))["type"] == "ack"
    found = await presence_of(w1, mallory, victim.id)
    assert found["hidden"] == [] and found["presence"][0]["status"] == "online"  # type: ignore[index]
    again = await Ws.connect(w2.base_url, mallory.token)
    assert victim.id in {p["user_id"] for p in again.ready["presence"]}
    await v.send_json({"type": "presence", "status": "idle"})
    away = await again.expect(about(victim.id))
    assert away["status"] == "away"
    # The creator took part by creating: the victim sees mallory.
    assert (await presence_of(w1, victim, mallory.id))["hidden"] == []
    for ws in (m, v, late, again):
        await ws.close()


async def test_adding_by_id_does_not_tell_which_ids_exist(w1: Api) -> None:
    alice, stranger, friend = await w1.user(), await w1.user(), await w1.user()
    await w1.direct(friend, alice)  # alice may know friend's id: they share a conversation
    ghost = stranger.id + 10**9

    async def error_of(method: str, path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
        response = await w1.call(method, path, alice.token, body)
        return response.status_code, response.json()

    for uid in (stranger.id, ghost):
        status, body = await error_of("POST", "/v1/conversations/group", {"title": "t", "user_ids": [uid]})
        assert (status, body) == (
            404,
            {"error": {"code": "user_not_found", "message": "no such user", "user_ids": [uid]}},
        ), f"group with {'an existing' if uid == stranger.id else 'a missing'} id"
        status, body = await error_of("POST", "/v1/conversations/direct", {"user_id": uid})
        assert status == 404 and body["error"]["user_ids"] == [uid]  # type: ignore[index]
    gid = (await w1.call("POST", "/v1/conversations/group", alice.token, {"title": "ok"})).json()["id"]
    status, body = await error_of("POST", f"/v1/conversations/{gid}/members", {"user_ids": [stranger.id]})
    assert status == 404 and body["error"]["user_ids"] == [stranger.id]  # type: ignore[index]
    status, _ = await error_of("POST", f"/v1/conversations/{gid}/members", {"user_ids": [friend.id]})
    assert status == 200, "ids of people you share a conversation with still work"
    status, _ = await error_of("POST", "/v1/conversations/group", {"title": "t", "user_ids": [friend.id]})
    assert status == 201


async def test_failed_username_lookups_are_rate_limited(w1: Api, spawn_worker: Callable[..., Worker]) -> None:
    worker = spawn_worker(CHATD_USER_LOOKUP_RATE_LIMIT="5")
    api = Api(worker.url)
    prober, real = await w1.user(), await w1.user()
    statuses = []
    for _ in range(8):
        body = {"username": f"nobody-{uuid.uuid4().hex[:12]}"}
        statuses.append((await api.call("POST", "/v1/conversations/direct", prober.token, body)).status_code)
    assert statuses[:5] == [404] * 5 and statuses[5:] == [429] * 3, statuses
    # While limited, an existing name is not told apart from a missing one.
    found = await api.call("POST", "/v1/conversations/direct", prober.token, {"username": real.name})
    assert found.status_code == 429 and found.json()["error"]["code"] == "rate_limited"
    group = await api.call(
        "POST", "/v1/conversations/group", prober.token, {"title": "t", "usernames": [real.name]}
    )
    assert group.status_code == 429
    await api.http.aclose()


async def test_sending_marks_taking_part_once(w1: Api) -> None:
    owner, member, watcher = await w1.user(), await w1.user(), await w1.user()
    gid = await w1.group(owner, [member, watcher])
    assert (await presence_of(w1, watcher, member.id))["hidden"] == [member.id]
    ws = await Ws.connect(w1.base_url, member.token)
    for i in range(3):
        cmid = uuid.uuid4().hex
        await ws.send_json({"type": "send", "conversation_id": gid, "client_msg_id": cmid, "body": str(i)})
        await ws.expect(ack_for(cmid))
    assert (await presence_of(w1, watcher, member.id))["hidden"] == []
    await ws.close()


async def test_one_request_naming_many_usernames_does_not_tell_which_exist(
    w1: Api, spawn_worker: Callable[..., Worker]
) -> None:
    worker = spawn_worker(CHATD_USER_LOOKUP_RATE_LIMIT="5")
    api = Api(worker.url)
    prober, real = await w1.user(), await w1.user()
    names = [real.name] + [f"nobody-{uuid.uuid4().hex[:12]}" for _ in range(20)]
    group = await api.call(
        "POST", "/v1/conversations/group", prober.token, {"title": "t", "usernames": names}
    )
    assert group.status_code == 429, "20 names not found at once are past the limit of 5"
    assert group.json()["error"]["code"] == "rate_limited"
    assert "usernames" not in group.json()["error"], "a refused request does not list the missing names"
    await api.http.aclose()
