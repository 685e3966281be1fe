"""Issue 19 items 15 and 16: `read` frames in flight while the member is removed, or while they
turn read sharing off, must not leave them visible (protocol.md §4.8: the pointer is forgotten;
turning sharing off hides it at once). Races: many trials each, with the reads pipelined so that
some are always in flight when the change lands."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import Api, Frame, User, Ws

# Each test runs against one Redis and against a Redis Cluster (conftest.py).
pytestmark = pytest.mark.both_redis

TRIALS = 40
MESSAGES = 12


async def pipelined_reads(ws: Ws, cid: int, upto: int) -> list[Frame]:
    """Send `read` for seqs 1..upto back to back (each moves the pointer); returns the replies."""
    refs = [f"r-{uuid.uuid4().hex}" for _ in range(upto)]
    for seq, ref in enumerate(refs, start=1):
        await ws.send_json({"type": "read", "id": ref, "conversation_id": cid, "seq": seq})
    return [await ws.expect(replying(ref)) for ref in refs]


def replying(ref: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("ref") == ref


def removal_of(cid: int) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "message" and f["kind"] == "members_removed" and f["conversation_id"] == cid


async def readers(api: Api, viewer: User, cid: int, seq: int) -> list[int]:
    response = await api.call("GET", f"/v1/conversations/{cid}/messages/{seq}/readers", viewer.token)
    assert response.status_code == 200, response.text
    found: list[int] = response.json()["user_ids"]
    return found


async def read_by(api: Api, viewer: User, cid: int, seq: int) -> int:
    response = await api.call("GET", f"/v1/conversations/{cid}/receipts?from={seq}&to={seq}", viewer.token)
    assert response.status_code == 200, response.text
    count: int = response.json()["counts"][0]["read_by"]
    return count


async def pointer(api: Api, user: User, cid: int) -> int:
    response = await api.call("GET", "/v1/me/read_state", user.token)
    assert response.status_code == 200, response.text
    [entry] = [e for e in response.json()["conversations"] if e["conversation_id"] == cid]
    seq: int = entry["last_read_seq"]
    return seq


async def group_with_history(api: Api, owner: Ws, owner_user: User, member: User, m: Ws) -> int:
    """A group of owner and member, where the member took part (so their reads count, §4.9),
    and MESSAGES messages from the owner that the member's socket has received."""
    cid = await api.group(owner_user, [member], title="race")
    await m.expect(lambda f: f["type"] == "conversation_added" and f["conversation"]["id"] == cid)
    assert (await m.send(cid, "here"))["type"] == "ack"
    last = 0
    for i in range(MESSAGES):
        last = (await owner.send(cid, f"m{i}"))["seq"]
    await m.wait_seq(cid, last)
    return cid


async def test_reads_in_flight_while_removed_leave_no_pointer(w1: Api, w2: Api) -> None:
    owner, member = await w1.user("own"), await w1.user("mem")
    o = await Ws.connect(w2.base_url, owner.token)  # the removal runs on the other worker
    m = await Ws.connect(w1.base_url, member.token)
    leaked: list[dict[str, Any]] = []
    for trial in range(TRIALS):
        cid = await group_with_history(w2, o, owner, member, m)
        last = MESSAGES + 1
        reading = asyncio.create_task(pipelined_reads(m, cid, last))
        removed = await w2.call("DELETE", f"/v1/conversations/{cid}/members/{member.id}", owner.token)
        assert removed.status_code == 200, removed.text
        replies = await reading
        assert all(r["type"] in ("read_state", "error") for r in replies), replies
        await m.expect(removal_of(cid))
        listed = member.id in await readers(w2, owner, cid, 2)
        counted = await read_by(w2, owner, cid, 2)
        back = await w2.call(
            "POST", f"/v1/conversations/{cid}/members", owner.token, {"usernames": [member.name]}
        )
        assert back.status_code == 200, back.text
        restarted = await pointer(w1, member, cid)
        if listed or counted or restarted:
            leaked.append(
                {"trial": trial, "listed": listed, "read_by": counted, "pointer_after_readd": restarted}
            )
    assert leaked == [], f"{len(leaked)} of {TRIALS} trials kept the removed member's pointer: {leaked}"
    await o.close()
    await m.close()


async def test_reads_in_flight_while_sharing_is_turned_off_stay_private(w1: Api, w2: Api) -> None:
    owner, member = await w1.user("own"), await w1.user("mem")
    o = await Ws.connect(w2.base_url, owner.token)
    m = await Ws.connect(w1.base_url, member.token)
    leaked: list[dict[str, Any]] = []
    for trial in range(TRIALS):
        cid = await group_with_history(w2, o, owner, member, m)
        reading = asyncio.create_task(pipelined_reads(m, cid, MESSAGES + 1))
        off = await w2.call("PUT", "/v1/me/settings", member.token, {"share_read_state": False})
        assert off.status_code == 200, off.text
        replies = await reading
        assert all(r["type"] == "read_state" for r in replies), replies
        listed = member.id in await readers(w2, owner, cid, 2)
        counted = await read_by(w2, owner, cid, 2)
        if listed or counted:
            leaked.append({"trial": trial, "listed": listed, "read_by": counted})
        # Sharing again shows the pointer at once (and sets up the next trial).
        on = await w2.call("PUT", "/v1/me/settings", member.token, {"share_read_state": True})
        assert on.status_code == 200, on.text
        assert member.id in await readers(w2, owner, cid, 2)
    assert leaked == [], f"{len(leaked)} of {TRIALS} trials left a private reader visible: {leaked}"
    await o.close()
    await m.close()
