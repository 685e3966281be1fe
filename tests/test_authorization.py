"""Only members read, send, or receive a conversation's events; membership changes are exact."""

from __future__ import annotations

from tests.helpers import Api, Ws, sentinel


async def test_non_member_cannot_read_send_or_subscribe(w1: Api, w2: Api) -> None:
    alice, bob, mallory = await w1.user(), await w1.user(), await w1.user("mallory")
    cid = await w1.direct(alice, bob)
    side = await w1.direct(alice, mallory)  # for the barrier below
    a = await Ws.connect(w1.base_url, alice.token)
    await a.send(cid, "secret")

    history = await w1.call("GET", f"/v1/conversations/{cid}/messages", mallory.token)
    assert history.status_code == 403 and history.json()["error"]["code"] == "not_member"
    for path in (f"/v1/conversations/{cid}", f"/v1/conversations/{cid}/members"):
        assert (await w1.call("GET", path, mallory.token)).status_code == 403

    m = await Ws.connect(w2.base_url, mallory.token, since={cid: 0})
    assert all(c["id"] != cid for c in m.ready["conversations"])
    refused = [f for f in m.frames if f["type"] == "error"]
    assert [(f["code"], f["conversation_id"]) for f in refused] == [("not_member", cid)]
    error = await m.send(cid, "let me in")
    assert error["type"] == "error" and error["code"] == "not_member"
    await a.send(cid, "still secret")
    await sentinel(a, m, side)  # sent after "still secret", so it would have come first
    assert m.messages(cid) == []
    assert [f["body"] for f in await w1.history(bob, cid)] == ["secret", "still secret"]
    await a.close()
    await m.close()


async def test_added_member_follows_live_from_the_add(w1: Api, w2: Api) -> None:
    owner, old, new = await w1.user(), await w1.user(), await w1.user()
    cid = await w1.group(owner, [old])
    o = await Ws.connect(w1.base_url, owner.token)
    await o.send(cid, "before you came")
    n = await Ws.connect(w2.base_url, new.token)  # connected before being added
    added = await w1.call("POST", f"/v1/conversations/{cid}/members", owner.token, {"usernames": [new.name]})
    assert added.status_code == 200 and added.json()["event"]["kind"] == "members_added"
    event_seq = added.json()["event"]["seq"]
    announced = await n.expect(lambda f: f["type"] == "conversation_added")
    assert announced["conversation"]["id"] == cid
    first = await n.expect(lambda f: f["type"] == "message")
    assert (first["seq"], first["kind"], first["user_ids"]) == (event_seq, "members_added", [new.id])
    await o.send(cid, "welcome")
    welcome = await n.expect(lambda f: f["type"] == "message")
    assert (welcome["seq"], welcome["body"]) == (event_seq + 1, "welcome")
    await o.close()
    await n.close()


async def test_removed_member_stops_receiving_at_the_removal(w1: Api, w2: Api) -> None:
    owner, member = await w1.user(), await w1.user()
    cid = await w1.group(owner, [member])
    side = await w1.direct(owner, member)  # for the barrier below
    o = await Ws.connect(w1.base_url, owner.token)
    m = await Ws.connect(w2.base_url, member.token)
    await o.send(cid, "one")
    removed = await w1.call("DELETE", f"/v1/conversations/{cid}/members/{member.id}", owner.token)
    assert removed.status_code == 200
    removal_seq = removed.json()["event"]["seq"]
    await o.send(cid, "after removal")
    await m.expect(lambda f: f["type"] == "message" and f["kind"] == "members_removed")
    await sentinel(o, m, side)  # sent after "after removal", so it would have come first
    assert [f["seq"] for f in m.messages(cid)] == [1, removal_seq]
    assert (await m.send(cid, "can I?"))["code"] == "not_member"
    assert (await w1.call("GET", f"/v1/conversations/{cid}/messages", member.token)).status_code == 403
    await o.close()
    await m.close()


async def test_only_owner_removes_others_members_may_leave(w1: Api) -> None:
    owner, a, b = await w1.user(), await w1.user(), await w1.user()
    cid = await w1.group(owner, [a, b])
    kick = await w1.call("DELETE", f"/v1/conversations/{cid}/members/{b.id}", a.token)
    assert kick.status_code == 403 and kick.json()["error"]["code"] == "forbidden"
    leave = await w1.call("DELETE", f"/v1/conversations/{cid}/members/{a.id}", a.token)
    assert leave.status_code == 200
    # The last owner leaving hands ownership to the longest-standing member.
    assert (
        await w1.call("DELETE", f"/v1/conversations/{cid}/members/{owner.id}", owner.token)
    ).status_code == 200
    conv = await w1.call("GET", f"/v1/conversations/{cid}", b.token)
    assert conv.json()["role"] == "owner" and conv.json()["member_count"] == 1


async def test_direct_conversation_members_are_fixed(w1: Api) -> None:
    alice, bob, carol = await w1.user(), await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    response = await w1.call(
        "POST", f"/v1/conversations/{cid}/members", alice.token, {"usernames": [carol.name]}
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_a_group"
    outsider = await w1.call(
        "POST", f"/v1/conversations/{cid}/members", carol.token, {"user_ids": [carol.id]}
    )
    assert outsider.status_code == 403 and outsider.json()["error"]["code"] == "not_member"
