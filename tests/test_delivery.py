"""Real-time delivery across worker processes, acks after commit, resend, ordering."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from chatd.devstack import Stack
from tests.helpers import Api, Ws, ack_for, wait_until_blocked

# Each test runs against one Redis and against a Redis Cluster (conftest.py).
pytestmark = pytest.mark.both_redis


async def test_direct_message_reaches_recipient_on_other_worker(w1: Api, w2: Api) -> None:
    alice, bob = await w1.user("alice"), await w1.user("bob")
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    b = await Ws.connect(w2.base_url, bob.token)
    ack = await a.send(cid, "hello bob")
    assert ack["type"] == "ack" and ack["seq"] == 1 and ack["duplicate"] is False
    got = await b.expect(lambda f: f["type"] == "message")
    assert (got["conversation_id"], got["seq"], got["body"], got["sender_id"]) == (
        cid,
        1,
        "hello bob",
        alice.id,
    )
    assert got["id"] == ack["message_id"]
    # The sender's own connection receives the event too (one gapless stream per conversation).
    assert (await a.expect(lambda f: f["type"] == "message"))["seq"] == 1
    await a.close()
    await b.close()


async def test_direct_conversation_is_one_per_pair(w1: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    first = await w1.call("POST", "/v1/conversations/direct", alice.token, {"username": bob.name})
    again = await w1.call("POST", "/v1/conversations/direct", bob.token, {"username": alice.name})
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]


async def test_group_delivery_to_every_device_on_every_worker(w1: Api, w2: Api, nginx: Api) -> None:
    owner, m1, m2 = await w1.user(), await w1.user(), await w1.user()
    cid = await w1.group(owner, [m1, m2])
    sender = await Ws.connect(w1.base_url, owner.token)
    owner_other_device = await Ws.connect(w2.base_url, owner.token)
    r1 = await Ws.connect(w2.base_url, m1.token)
    r2a = await Ws.connect(w1.base_url, m2.token)
    r2b = await Ws.connect(nginx.base_url, m2.token)
    ack = await sender.send(cid, "hi team")
    assert ack["type"] == "ack"
    for ws in (owner_other_device, r1, r2a, r2b, sender):
        frame = await ws.expect(lambda f: f["type"] == "message" and f["kind"] == "text")
        assert (frame["conversation_id"], frame["seq"], frame["body"]) == (cid, ack["seq"], "hi team")
    for ws in (sender, owner_other_device, r1, r2a, r2b):
        await ws.close()


async def test_ack_is_sent_only_after_commit(w1: Api, stack: Stack, db: asyncpg.Connection) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    watcher = await asyncpg.connect(stack.database_url)
    try:
        # Hold the conversation row lock every append takes first (migration 0006).
        async with db.transaction():
            await db.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", cid)
            holder = await db.fetchval("SELECT pg_backend_pid()")
            await a.send_json({"type": "send", "conversation_id": cid, "client_msg_id": "held", "body": "x"})
            # Barrier: the worker's append is waiting for this lock, so it has not committed.
            await wait_until_blocked(watcher, holder)
            assert not [f for f in a.frames if f["type"] in ("ack", "error")], "answered before COMMIT"
            assert (
                await watcher.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", cid) == 0
            )
        ack = await a.expect(ack_for("held"))  # released: now it commits, then acks
        row = await watcher.fetchrow("SELECT seq, body FROM messages WHERE id = $1", ack["message_id"])
        assert row is not None and (row["seq"], row["body"]) == (ack["seq"], "x") == (1, "x")
    finally:
        await watcher.close()
    for i in range(1, 20):
        ack = await a.send(cid, f"m{i}")
        # A fresh connection sees the row the moment the ack arrives: it was committed first.
        row = await db.fetchrow(
            "SELECT seq, body FROM messages WHERE id = $1 AND conversation_id = $2", ack["message_id"], cid
        )
        assert row is not None and (row["seq"], row["body"]) == (ack["seq"], f"m{i}")
    await a.close()


async def test_resend_returns_original_ack_and_stores_once(w1: Api, w2: Api, db: asyncpg.Connection) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    client_msg_id = uuid.uuid4().hex
    a1 = await Ws.connect(w1.base_url, alice.token)
    first = await a1.send(cid, "only once", client_msg_id)
    again = await a1.send(cid, "only once", client_msg_id)
    await a1.close()
    # After a reconnect to another worker process: still the original.
    a2 = await Ws.connect(w2.base_url, alice.token)
    third = await a2.send(cid, "only once", client_msg_id)
    await a2.close()
    assert first["duplicate"] is False and again["duplicate"] is True and third["duplicate"] is True
    assert first["message_id"] == again["message_id"] == third["message_id"]
    assert first["seq"] == again["seq"] == third["seq"] == 1
    count = await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", cid)
    assert count == 1
    # The next message is not affected by the duplicates: no gap.
    a3 = await Ws.connect(w1.base_url, alice.token)
    assert (await a3.send(cid, "next"))["seq"] == 2
    await a3.close()


async def test_client_msg_id_reused_for_another_conversation_is_rejected(w1: Api) -> None:
    alice, bob, carol = await w1.user(), await w1.user(), await w1.user()
    c1, c2 = await w1.direct(alice, bob), await w1.direct(alice, carol)
    a = await Ws.connect(w1.base_url, alice.token)
    assert (await a.send(c1, "x", "same-id"))["type"] == "ack"
    error = await a.send(c2, "y", "same-id")
    assert error["type"] == "error" and error["code"] == "client_msg_id_conflict"
    await a.close()


async def test_concurrent_senders_get_gapless_ordered_seqs(w1: Api, w2: Api, db: asyncpg.Connection) -> None:
    users = [await w1.user() for _ in range(6)]
    cid = await w1.group(users[0], users[1:])
    watchers = [await Ws.connect(w1.base_url, users[0].token), await Ws.connect(w2.base_url, users[1].token)]
    senders = [await Ws.connect((w1, w2)[i % 2].base_url, u.token) for i, u in enumerate(users)]
    per_sender = 25

    async def blast(ws: Ws, index: int) -> list[int]:
        seqs = []
        for n in range(per_sender):
            ack = await ws.send(cid, f"{index}:{n}")
            assert ack["type"] == "ack", ack
            seqs.append(ack["seq"])
        return seqs

    results = await asyncio.gather(*(blast(ws, i) for i, ws in enumerate(senders)))
    total = per_sender * len(senders)
    acked = sorted(seq for seqs in results for seq in seqs)
    assert acked == list(range(1, total + 1))
    for seqs in results:  # one connection's sends are stored in the order it sent them
        assert seqs == sorted(seqs)
    stored = [
        r["seq"]
        for r in await db.fetch("SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq", cid)
    ]
    assert stored == list(range(1, total + 1))
    for ws in watchers:
        got = [f["seq"] for f in await ws.wait_seq(cid, total)]
        assert got == list(range(1, total + 1)), "live delivery must be in order, no gap, no duplicate"
    for ws in watchers + senders:
        await ws.close()


async def test_history_pages_by_seq(w1: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    for i in range(1, 26):
        assert (await a.send(cid, f"m{i}"))["seq"] == i
    await a.close()
    latest = await w1.history(bob, cid, limit=10)
    assert [m["seq"] for m in latest] == list(range(16, 26))
    older = await w1.history(bob, cid, before=16, limit=10)
    assert [m["seq"] for m in older] == list(range(6, 16))
    oldest = await w1.history(bob, cid, before=6, limit=10)
    assert [m["seq"] for m in oldest] == [1, 2, 3, 4, 5]
    forward = await w1.history(bob, cid, after=20, limit=3)
    assert [m["seq"] for m in forward] == [21, 22, 23]
    window = await w1.history(bob, cid, after=3, before=6)
    assert [m["seq"] for m in window] == [4, 5]
    assert [m["body"] for m in forward] == ["m21", "m22", "m23"]


async def test_catch_up_with_messages_sent_during_it(w1: Api, w2: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    for i in range(1, 1201):  # more than two catch-up pages, at most 100 unacknowledged sends
        await a.send_json(
            {"type": "send", "conversation_id": cid, "client_msg_id": f"pre{i}", "body": f"{i}"}
        )
        if i % 100 == 0:
            await a.expect(ack_for(f"pre{i}"), timeout=60)

    sending = asyncio.Event()

    async def keep_sending() -> None:
        for i in range(1201, 1401):
            ack = await a.send(cid, f"{i}", f"live{i}")
            assert ack["type"] == "ack"
            sending.set()

    sender = asyncio.create_task(keep_sending())
    await sending.wait()  # alice is sending
    # Bob had seen up to seq 100; he reconnects while Alice keeps sending.
    b = await Ws.connect(w2.base_url, bob.token, since={cid: 100}, wait_synced=False)
    await sender
    got = [f["seq"] for f in await b.wait_seq(cid, 1400, timeout=60)]
    assert got == list(range(101, 1401))
    await a.close()
    await b.close()


async def test_ready_reports_last_seq_and_live_continues_from_it(w1: Api, w2: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    for i in range(3):
        await a.send(cid, f"old{i}")
    b = await Ws.connect(w2.base_url, bob.token)
    [conv] = [c for c in b.ready["conversations"] if c["id"] == cid]
    assert conv["last_seq"] == 3 and conv["kind"] == "direct"
    await a.send(cid, "new")
    frame = await b.expect(lambda f: f["type"] == "message")
    assert frame["seq"] == 4 and b.messages(cid) == [frame]  # nothing before it is replayed
    await a.close()
    await b.close()


async def test_a_lost_publish_is_filled_from_postgres_when_a_later_message_arrives(
    w1: Api, w2: Api, db: asyncpg.Connection
) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    b = await Ws.connect(w2.base_url, bob.token)
    await a.send(cid, "one")
    await b.wait_seq(cid, 1)
    # Committed, never published: as when a worker dies between COMMIT and PUBLISH.
    await db.fetch("SELECT seq FROM chatd_append($1, $2, $3, $4)", cid, alice.id, "lost", "lost")
    assert (await a.send(cid, "three"))["seq"] == 3
    for ws in (b, a):  # both workers see seq 3 ahead of 2 and read the gap from Postgres
        got = await ws.wait_seq(cid, 3)
        assert [(f["seq"], f["body"]) for f in got] == [(1, "one"), (2, "lost"), (3, "three")]
    await a.close()
    await b.close()
