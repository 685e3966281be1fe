"""Issue 19 item 23: read receipts and typing show activity, so §4.9's consent rule applies to
them: a stranger who opened a direct conversation with V, or put V in a group, sees neither V's
reads nor V's typing until V took part (opened it, added members to it or wrote in it).
Reading is not taking part: the web app marks what is on screen read by itself."""

from __future__ import annotations

import pytest

from tests.helpers import Api, Frame, Ws

# Each test runs against one Redis and against a Redis Cluster (conftest.py).
pytestmark = pytest.mark.both_redis


async def test_a_stranger_sees_no_read_or_typing_until_they_take_part(w1: Api, w2: Api) -> None:
    stranger, victim = await w1.user("str"), await w1.user("vic")
    cid = await w1.direct(stranger, victim)  # the stranger opened it; the victim has not
    s = await Ws.connect(w1.base_url, stranger.token)
    v = await Ws.connect(w2.base_url, victim.token)
    phone = await Ws.connect(w2.base_url, victim.token)
    for i in range(3):
        assert (await s.send(cid, f"hi {i}"))["type"] == "ack"
    await v.wait_seq(cid, 3)
    await v.send_json({"type": "typing", "conversation_id": cid})
    assert (await v.read(cid, 1))["last_read_seq"] == 1  # moved: the victim's own devices hear it
    await phone.expect(lambda f: f["type"] == "read_state" and f["last_read_seq"] == 1)

    # Opening the conversation is taking part: from then on the stranger is told.
    opened = await w2.call("POST", "/v1/conversations/direct", victim.token, {"username": stranger.name})
    assert opened.status_code == 200
    assert (await v.read(cid, 2))["last_read_seq"] == 2
    read = await s.expect(lambda f: f["type"] == "read")
    assert (read["user_id"], read["seq"]) == (victim.id, 2)
    await phone.send_json({"type": "typing", "conversation_id": cid})
    typing = await s.expect(lambda f: f["type"] == "typing")
    assert typing["user_id"] == victim.id
    # Barrier: the victim's worker publishes state in order, so anything the victim's earlier
    # read or typing had sent would have reached the stranger before these.
    first: list[Frame] = [f for f in s.frames if f["type"] in ("read", "typing")]
    assert first[:2] == [read, typing], "the victim's activity before taking part was shown"
    for ws in (s, v, phone):
        await ws.close()


async def test_group_counts_and_readers_leave_out_members_who_never_took_part(w1: Api) -> None:
    stranger, victim, friend = await w1.user("str"), await w1.user("vic"), await w1.user("fr")
    cid = await w1.group(stranger, [victim, friend])
    s = await Ws.connect(w1.base_url, stranger.token)
    v = await Ws.connect(w1.base_url, victim.token)
    f = await Ws.connect(w1.base_url, friend.token)
    assert (await s.send(cid, "look"))["type"] == "ack"
    assert (await f.send(cid, "me too"))["type"] == "ack"  # the friend took part
    await v.wait_seq(cid, 2)
    await f.wait_seq(cid, 2)
    await v.read(cid, 2)
    await f.read(cid, 1)

    async def shown() -> tuple[int, list[int]]:
        counts = await w1.call("GET", f"/v1/conversations/{cid}/receipts?from=1&to=1", stranger.token)
        who = await w1.call("GET", f"/v1/conversations/{cid}/messages/1/readers", stranger.token)
        assert counts.status_code == 200 and who.status_code == 200
        read_by: int = counts.json()["counts"][0]["read_by"]
        readers: list[int] = who.json()["user_ids"]
        return read_by, readers

    assert await shown() == (1, [friend.id]), "only the member who took part counts"
    # Writing is taking part: the victim's pointer shows from then on, without another read.
    assert (await v.send(cid, "ok then"))["type"] == "ack"
    assert await shown() == (2, sorted([victim.id, friend.id]))
    for ws in (s, v, f):
        await ws.close()


async def test_naming_a_member_who_is_there_is_taking_part_without_writing(w1: Api) -> None:
    owner, member = await w1.user("own"), await w1.user("mem")
    cid = await w1.group(owner, [member])
    o = await Ws.connect(w1.base_url, owner.token)
    m = await Ws.connect(w1.base_url, member.token)
    assert (await o.send(cid, "anyone?"))["type"] == "ack"
    await m.wait_seq(cid, 1)
    await m.read(cid, 1)
    who = f"/v1/conversations/{cid}/messages/1/readers"
    assert (await w1.call("GET", who, owner.token)).json()["user_ids"] == []
    same = await w1.call(
        "POST", f"/v1/conversations/{cid}/members", member.token, {"usernames": [owner.name]}
    )
    assert same.status_code == 200 and same.json() == {"event": None}, same.text
    assert (await w1.call("GET", who, owner.token)).json()["user_ids"] == [member.id]
    for ws in (o, m):
        await ws.close()
