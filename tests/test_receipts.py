"""Read receipts: pointers, 1:1 read events, exact group counts, devices, privacy, bad input."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import asyncpg
import pytest

from chatd.devstack import Stack
from tests.conftest import Worker
from tests.helpers import Api, Ws
from tests.test_receipts_flush import flush_after

# Each test runs against one Redis and against a Redis Cluster (conftest.py).
pytestmark = pytest.mark.both_redis


async def send_n(ws: Ws, cid: int, n: int) -> None:
    for i in range(n):
        assert (await ws.send(cid, f"m{i}"))["type"] == "ack"


async def test_direct_read_event_reaches_sender_and_other_devices(w1: Api, w2: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    await w1.direct(bob, alice)  # bob opens it too: his reads are shown (§4.9)
    a = await Ws.connect(w1.base_url, alice.token)
    await send_n(a, cid, 3)
    b1 = await Ws.connect(w2.base_url, bob.token)
    b2 = await Ws.connect(w1.base_url, bob.token)
    reply = await b1.read(cid, 2)
    assert reply == {"type": "read_state", "conversation_id": cid, "last_read_seq": 2, "ref": reply["ref"]}
    read = await a.expect(lambda f: f["type"] == "read")
    assert (read["conversation_id"], read["user_id"], read["seq"]) == (cid, bob.id, 2)
    synced = await b2.expect(lambda f: f["type"] == "read_state")
    assert synced["last_read_seq"] == 2
    # Barrier: b2's later mark reaches b1 after any echo of b1's own mark would have.
    await b2.read(cid, 3)
    later = await b1.expect(lambda f: f["type"] == "read_state" and f["last_read_seq"] == 3)
    assert [f for f in b1.frames if f["type"] == "read_state"] == [reply, later]  # no echo to the marker
    for ws in (a, b1, b2):
        await ws.close()


async def test_pointer_only_moves_forward(w1: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    await w1.direct(bob, alice)  # bob opens it too: his reads are shown (§4.9)
    a = await Ws.connect(w1.base_url, alice.token)
    await send_n(a, cid, 6)
    b = await Ws.connect(w1.base_url, bob.token)
    assert (await b.read(cid, 5))["last_read_seq"] == 5
    assert (await b.read(cid, 3))["last_read_seq"] == 5  # older: a no-op, not an error
    assert (await b.read(cid, 5))["last_read_seq"] == 5  # repeated: a no-op
    assert (await b.read(cid, 6))["last_read_seq"] == 6
    await a.expect(lambda f: f["type"] == "read" and f["seq"] == 6)
    assert [f["seq"] for f in a.frames if f["type"] == "read"] == [5, 6]
    await a.close()
    await b.close()


async def test_group_counts_are_exact_under_concurrent_readers(w1: Api, w2: Api) -> None:
    sender = await w1.user()
    readers = [await w1.user() for _ in range(30)]
    cid = await w1.group(sender, readers)
    s = await Ws.connect(w1.base_url, sender.token)
    await send_n(s, cid, 10)
    sockets = [await Ws.connect((w1, w2)[i % 2].base_url, u.token) for i, u in enumerate(readers)]
    for ws in sockets:  # each reader takes part (§4.9: only then are their reads counted)
        assert (await ws.send(cid, "here"))["type"] == "ack"
    rng = random.Random(7)
    final = [rng.randint(0, 10) for _ in readers]

    async def reader(ws: Ws, upto: int) -> None:
        if upto == 0:
            return
        steps = sorted({rng.randint(1, upto) for _ in range(3)} | {upto})
        rng.shuffle(steps)  # out of order: pointers must still end at the maximum
        for seq in steps:
            assert (await ws.read(cid, seq))["type"] == "read_state"

    started = time.monotonic()
    await asyncio.gather(*(reader(ws, upto) for ws, upto in zip(sockets, final, strict=True)))
    expected = [sum(1 for f in final if f >= seq) for seq in range(1, 11)]
    counted = (await w1.call("GET", f"/v1/conversations/{cid}/receipts?from=1&to=10", sender.token)).json()
    assert counted["members"] == 31
    assert [c["read_by"] for c in counted["counts"]] == expected
    assert all(c["of"] == 30 for c in counted["counts"])
    # Live counts are coalesced: the sender's last `receipts` event converges on the exact counts.
    deadline = time.monotonic() + 5
    while True:
        events = [f for f in s.frames if f["type"] == "receipts"]
        live = {}
        for event in events:
            live.update({c["seq"]: c["read_by"] for c in event["counts"]})
        if [live.get(seq, 0) for seq in range(1, 11)] == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert [live.get(seq, 0) for seq in range(1, 11)] == expected
    windows = (time.monotonic() - started) / 0.3
    assert len(events) <= windows + 2, "at most one receipts event per conversation per window"
    assert not any(f["type"] == "read" for f in s.frames), "no per-reader events in groups"
    # Who read message 10: exactly the readers whose pointer reached it, never the sender.
    who = (await w1.call("GET", f"/v1/conversations/{cid}/messages/10/readers", sender.token)).json()
    assert who["user_ids"] == sorted(u.id for u, f in zip(readers, final, strict=True) if f >= 10)
    for ws in [s, *sockets]:
        await ws.close()


async def test_unread_and_pointer_sync_on_reconnect_and_across_devices(w1: Api, w2: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    await send_n(a, cid, 5)
    phone = await Ws.connect(w1.base_url, bob.token)
    laptop = await Ws.connect(w2.base_url, bob.token)
    await phone.read(cid, 3)
    assert (await laptop.expect(lambda f: f["type"] == "read_state"))["last_read_seq"] == 3
    assert (await phone.send(cid, "my own message"))["type"] == "ack"  # never unread for me
    await phone.close()
    await laptop.close()
    tablet = await Ws.connect(w2.base_url, bob.token)
    [conv] = [c for c in tablet.ready["conversations"] if c["id"] == cid]
    assert (conv["last_read_seq"], conv["unread"], conv["last_seq"]) == (3, 2, 6)
    [mine] = [c for c in a.ready["conversations"] if c["id"] == cid]
    assert (mine["last_read_seq"], mine["unread"]) == (0, 0)
    await tablet.close()
    await a.close()


async def test_private_read_state_is_not_shared_but_still_syncs(w1: Api, w2: Api) -> None:
    alice, bob, carol = await w1.user(), await w1.user(), await w1.user()
    direct = await w1.direct(alice, bob)
    group = await w1.group(alice, [bob, carol])
    assert (
        await w1.call("PUT", "/v1/me/settings", bob.token, {"share_read_state": False})
    ).status_code == 200
    assert (await w1.call("GET", "/v1/me", bob.token)).json()["share_read_state"] is False
    a = await Ws.connect(w1.base_url, alice.token)
    await send_n(a, direct, 2)
    await send_n(a, group, 2)
    b1 = await Ws.connect(w2.base_url, bob.token)
    b2 = await Ws.connect(w1.base_url, bob.token)
    c = await Ws.connect(w2.base_url, carol.token)
    # Both take part (§4.9), so privacy is what keeps bob's reads hidden.
    await w1.direct(bob, alice)
    for ws in (b1, c):
        assert (await ws.send(group, "here"))["type"] == "ack"
    await b1.read(direct, 2)
    await b1.read(group, 2)
    await c.read(group, 2)
    assert (await b2.expect(lambda f: f["type"] == "read_state" and f["conversation_id"] == group))[
        "last_read_seq"
    ] == 2
    counts = (await w1.call("GET", f"/v1/conversations/{group}/receipts?from=1&to=2", alice.token)).json()
    assert [x["read_by"] for x in counts["counts"]] == [1, 1]  # carol only
    who = (await w1.call("GET", f"/v1/conversations/{group}/messages/2/readers", alice.token)).json()
    assert who["user_ids"] == [carol.id]
    # Sharing again publishes the pointers bob already has.
    await w1.call("PUT", "/v1/me/settings", bob.token, {"share_read_state": True})
    # Barrier: a shared mark from the same socket reaches alice after any `read` that bob's
    # private marks (published before their replies) would have sent.
    await send_n(a, direct, 1)
    await b1.wait_seq(direct, 3)
    await b1.read(direct, 3)
    shared = await a.expect(lambda f: f["type"] == "read" and f["conversation_id"] == direct)
    assert [f for f in a.frames if f["type"] == "read"] == [shared], "bob's private reads stayed private"
    counts = (await w1.call("GET", f"/v1/conversations/{group}/receipts?from=1&to=2", alice.token)).json()
    assert [x["read_by"] for x in counts["counts"]] == [2, 2]
    for ws in (a, b1, b2, c):
        await ws.close()


async def test_read_bad_input(w1: Api, spawn_worker: Callable[..., Worker]) -> None:
    alice, bob, mallory = await w1.user(), await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    await send_n(a, cid, 2)
    beyond = await a.read(cid, 3)
    assert (beyond["code"], beyond["last_seq"]) == ("seq_out_of_range", 2)
    assert (await a.read(10**12, 1))["code"] == "not_member"
    m = await Ws.connect(w1.base_url, mallory.token)
    assert (await m.read(cid, 1))["code"] == "not_member"
    for bad in (
        {"conversation_id": cid, "seq": "1"},
        {"conversation_id": cid},
        {"conversation_id": cid, "seq": 0},
    ):
        await a.send_json({"type": "read", "id": "bad", **bad})
        error = await a.expect(lambda f: f.get("ref") == "bad")
        assert error["code"] == "bad_request"
    outsider = await w1.call("GET", f"/v1/conversations/{cid}/receipts?from=1&to=2", mallory.token)
    assert outsider.status_code == 403
    assert (
        await w1.call("GET", f"/v1/conversations/{cid}/receipts?from=2&to=1", alice.token)
    ).status_code == 400
    assert (await w1.call("GET", f"/v1/conversations/{cid}/receipts", alice.token)).status_code == 400
    assert (
        await w1.call("PUT", "/v1/me/settings", alice.token, {"share_read_state": "no"})
    ).status_code == 400
    small = spawn_worker(CHATD_READERS_LIST_MAX="2")
    api = Api(small.url)
    group = await api.group(alice, [bob, mallory])
    too_big = await api.call("GET", f"/v1/conversations/{group}/messages/1/readers", alice.token)
    assert too_big.status_code == 403 and too_big.json()["error"]["code"] == "group_too_large"
    await api.http.aclose()
    await a.close()
    await m.close()


async def test_readded_member_starts_fresh_and_unread_counts_from_joining(
    stack: Stack, w1: Api, db: asyncpg.Connection
) -> None:
    owner, member = await w1.user(), await w1.user()
    cid = await w1.group(owner, [member])
    o = await Ws.connect(w1.base_url, owner.token)
    await send_n(o, cid, 3)
    m = await Ws.connect(w1.base_url, member.token)
    await m.read(cid, 3)
    await flush_after(stack, time.time())  # in Postgres (flushed every 1 s in the test stack)
    assert await db.fetchval("SELECT count(*) FROM read_pointers WHERE conversation_id = $1", cid) == 1
    await m.close()
    removed = await w1.call("DELETE", f"/v1/conversations/{cid}/members/{member.id}", owner.token)
    assert removed.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM read_pointers WHERE conversation_id = $1", cid) == 0
    await send_n(o, cid, 2)  # sent while the member was away
    readded = await w1.call(
        "POST", f"/v1/conversations/{cid}/members", owner.token, {"usernames": [member.name]}
    )
    joined_at = readded.json()["event"]["seq"]
    await send_n(o, cid, 1)
    counts = (await w1.call("GET", f"/v1/conversations/{cid}/receipts?from=1&to=3", owner.token)).json()
    assert [c["read_by"] for c in counts["counts"]] == [0, 0, 0], "the old pointer does not come back"
    back = await Ws.connect(w1.base_url, member.token)
    [conv] = [c for c in back.ready["conversations"] if c["id"] == cid]
    assert conv["unread"] == 1 and conv["last_seq"] == joined_at + 1  # only what came after joining
    await back.close()
    await o.close()
