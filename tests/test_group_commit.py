"""Group commit: concurrent sends share one statement, and each still gets its own answer."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import asyncpg
import pytest

from chatd.batching import Batcher
from chatd.devstack import Stack
from chatd.errors import ChatdError, Code
from chatd.storage.messages import MessageStore
from chatd.storage.records import Append
from tests.helpers import Api, Ws, ack_for, wait_until_blocked


@pytest.fixture
async def store(stack: Stack) -> AsyncIterator[MessageStore]:
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=8)
    yield MessageStore(pool)
    await pool.close()


async def test_batcher_coalesces_concurrent_items_and_keeps_each_answer() -> None:
    calls: list[list[int]] = []

    async def flush(items: list[int]) -> list[int | BaseException]:
        calls.append(items)
        await asyncio.sleep(0.01)
        return [ValueError(n) if n % 7 == 0 else n * 10 for n in items]

    batcher: Batcher[int, int] = Batcher(flush, max_size=16, concurrency=2)
    outcomes = await asyncio.gather(*(batcher.submit(n) for n in range(1, 101)), return_exceptions=True)
    for n, outcome in zip(range(1, 101), outcomes, strict=True):
        if n % 7 == 0:
            assert isinstance(outcome, ValueError) and outcome.args == (n,)
        else:
            assert outcome == n * 10
    assert sorted(n for call in calls for n in call) == list(range(1, 101))
    assert all(len(call) <= 16 for call in calls)
    assert len(calls) < 20, f"100 concurrent items took {len(calls)} flushes"


async def test_batcher_failure_reaches_every_item_of_the_batch() -> None:
    async def flush(items: list[int]) -> list[int | BaseException]:
        raise ConnectionError("down")

    batcher: Batcher[int, int] = Batcher(flush)
    outcomes = await asyncio.gather(*(batcher.submit(n) for n in range(5)), return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    with pytest.raises(ConnectionError):  # and the batcher still works afterwards
        await batcher.submit(1)


async def test_append_many_answers_each_send_like_a_single_append(w1: Api, store: MessageStore) -> None:
    alice, bob, carol = await w1.user(), await w1.user(), await w1.user()
    c1 = await w1.direct(alice, bob)
    c2 = await w1.group(alice, [bob])
    (stored,) = await store.append_many([Append(c1, alice.id, "before", "stored earlier")])
    assert not isinstance(stored, BaseException) and not stored[1]
    first = stored[0]
    results = await store.append_many(
        [
            Append(c1, alice.id, "a1", "one"),
            Append(c1, carol.id, "c1", "carol is not a member"),
            Append(c1, alice.id, "before", "a resend"),
            Append(c2, bob.id, "twice", "same key twice in one batch"),
            Append(c1, alice.id, "a2", "two"),
            Append(c2, bob.id, "twice", "same key twice in one batch"),
            Append(c2, alice.id, "a1", "key already used in c1 by this batch"),
            Append(c2, alice.id, "other", "fine"),
        ]
    )
    assert len(results) == 8
    a1, not_member, resend, twice1, a2, twice2, conflict, other = results
    assert isinstance(not_member, ChatdError) and not_member.code == Code.NOT_MEMBER
    assert isinstance(conflict, ChatdError) and conflict.code == Code.CLIENT_MSG_ID_CONFLICT
    assert not isinstance(a1, BaseException) and not isinstance(a2, BaseException)
    assert (a1[0].seq, a2[0].seq) == (first.seq + 1, first.seq + 2), "batch order is seq order"
    assert resend == (first, True)
    assert not isinstance(twice1, BaseException) and not isinstance(twice2, BaseException)
    assert twice1[0].id == twice2[0].id and {twice1[1], twice2[1]} == {False, True}
    assert not isinstance(other, BaseException) and not other[1]
    assert await store.range(c1, 1, 10) == [first, a1[0], a2[0]]
    assert [e.client_msg_id for e in await store.range(c2, 1, 10)] == ["twice", "other"]


async def test_concurrent_batches_over_shared_conversations_stay_gapless(
    w1: Api, store: MessageStore, db: asyncpg.Connection
) -> None:
    users = [await w1.user() for _ in range(4)]
    cids = [await w1.group(users[0], users[1:], title=f"g{i}") for i in range(6)]
    rng = random.Random(6)
    batches = []
    for b in range(12):  # each batch touches every conversation, in its own random order
        items = [Append(cid, users[b % 4].id, f"b{b}-{cid}-{n}", "x") for cid in cids for n in range(3)]
        rng.shuffle(items)
        batches.append(items)
    results = await asyncio.gather(*(store.append_many(items) for items in batches))
    assert all(not isinstance(r, BaseException) and not r[1] for batch in results for r in batch)
    for cid in cids:
        seqs = [r["seq"] for r in await db.fetch("SELECT seq FROM messages WHERE conversation_id = $1", cid)]
        assert sorted(seqs) == list(range(1, 12 * 3 + 1))
        assert await db.fetchval("SELECT last_seq FROM conversations WHERE id = $1", cid) == 12 * 3


async def test_many_connections_sending_at_once_are_all_acked_and_delivered(w1: Api, w2: Api) -> None:
    pairs = [(await w1.user(), await w1.user()) for _ in range(20)]
    cids = [await w1.direct(a, b) for a, b in pairs]
    senders = [await Ws.connect((w1, w2)[i % 2].base_url, a.token) for i, (a, _) in enumerate(pairs)]
    receivers = [await Ws.connect((w2, w1)[i % 2].base_url, b.token) for i, (_, b) in enumerate(pairs)]
    per = 10

    async def burst(ws: Ws, cid: int) -> list[int]:
        ids = [f"m{n}" for n in range(per)]
        frames = [{"type": "send", "conversation_id": cid, "client_msg_id": i, "body": i} for i in ids]
        await asyncio.gather(*(ws.send_json(frame) for frame in frames))
        return [(await ws.expect(ack_for(i)))["seq"] for i in ids]

    acked = await asyncio.gather(*(burst(ws, cid) for ws, cid in zip(senders, cids, strict=True)))
    for seqs, ws, cid in zip(acked, receivers, cids, strict=True):
        assert sorted(seqs) == list(range(1, per + 1))
        got = await ws.wait_seq(cid, per)
        assert [f["seq"] for f in got] == list(range(1, per + 1))
        assert sorted(f["body"] for f in got) == sorted(f"m{n}" for n in range(per))
    for ws in senders + receivers:
        await ws.close()


async def test_a_batch_that_loses_a_key_to_a_concurrent_commit_runs_again_whole_and_in_order(
    w1: Api, stack: Stack, store: MessageStore, db: asyncpg.Connection
) -> None:
    """Another transaction stores a key of the batch while the batch's statement runs: the
    statement waits for it on the unique index, fails at its COMMIT, and the batch is run
    again as one statement, in its order, the key now answered like a resend."""
    victim, peer, attacker = await w1.user(), await w1.user(), await w1.user()
    cid = await w1.direct(victim, peer)
    here, there = await w1.group(attacker, [], title="here"), await w1.group(attacker, [], title="there")
    watcher = await asyncpg.connect(stack.database_url)
    try:
        async with db.transaction():
            await db.execute(
                "SELECT * FROM chatd_append_many($1, $2, $3, $4, $5)",
                [there],
                [attacker.id],
                ["x"],
                ["1"],
                ["text"],
            )
            pid = await db.fetchval("SELECT pg_backend_pid()")
            items = [Append(cid, victim.id, f"v{n}", f"#{n}") for n in range(10)]
            items[5:5] = [
                Append(here, attacker.id, "x", "same key"),
                Append(there, attacker.id, "x", "same key"),
            ]
            batch = asyncio.ensure_future(store.append_many(items))
            await wait_until_blocked(watcher, pid)
            assert not batch.done()
        results = await batch
    finally:
        await watcher.close()
    conflict, duplicate = results[5:7]
    assert isinstance(conflict, ChatdError) and conflict.code == Code.CLIENT_MSG_ID_CONFLICT, conflict
    assert not isinstance(duplicate, BaseException) and duplicate[1], duplicate
    assert duplicate[0].conversation_id == there and duplicate[0].body == "1"
    victims = [r for n, r in enumerate(results) if n not in (5, 6)]
    assert [r[0].seq for r in victims if not isinstance(r, BaseException)] == list(range(1, 11))
    assert await db.fetchval("SELECT last_seq FROM conversations WHERE id = $1", cid) == 10
