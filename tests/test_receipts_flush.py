"""Read pointers reach Postgres in batches, survive SIGTERM and Redis data loss, one flusher at a time."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from chatd import keyspace
from chatd.devstack import Stack
from chatd.readstate import ReadState
from chatd.receipts import Flusher
from chatd.security import hash_token, new_token
from chatd.storage import Stores, create_pool
from tests.conftest import Worker
from tests.helpers import QUIET_REDIS_WORKER, REDIS_WORK, Api, User, Ws, redis_calls
from tests.test_large_group import bulk_users

# Each test runs against one Redis and against a Redis Cluster (conftest.py).
pytestmark = pytest.mark.both_redis

HANG_S = 60  # a guard against a hang, far above the flush lock's TTL (30 s)


async def pointer(db: asyncpg.Connection, cid: int, uid: int) -> int | None:
    value: int | None = await db.fetchval(
        "SELECT last_read_seq FROM read_pointers WHERE conversation_id = $1 AND user_id = $2", cid, uid
    )
    return value


async def wait_pointer(db: asyncpg.Connection, cid: int, uid: int, seq: int) -> None:
    """Until the pointer is in Postgres. Not a timing check: a flusher killed while it held the
    flush lock (every spawned worker is SIGKILLed at teardown) delays every flush until the
    lock's TTL runs out (30 s), and that delays, never loses, a pointer."""
    async with asyncio.timeout(HANG_S):
        while True:
            if (await pointer(db, cid, uid) or 0) >= seq:
                return
            await asyncio.sleep(0.05)


async def flush_after(stack: Stack, since: float) -> None:
    """Barrier: a flush that began after `since` (time.time()) has ended, so every pointer
    changed before `since` is in Postgres (chatd:rflushed-before, readstate.py)."""
    cluster = bool(stack.redis_cluster_ports)
    redis = (RedisCluster if cluster else aioredis.Redis).from_url(stack.redis_url)
    try:
        async with asyncio.timeout(HANG_S):
            while True:
                if float(await redis.get(keyspace.pointers("rflushed-before", cluster)) or 0) > since:
                    return
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()


async def group_with_flushed_reads(
    api: Api, url: str, db: asyncpg.Connection, messages: int, reads: tuple[int, int]
) -> tuple[int, list[User], list[Ws]]:
    """alice sends `messages` to bob and carol, who write one each and read up to `reads`,
    flushed to Postgres."""
    alice, bob, carol = await api.user(), await api.user(), await api.user()
    cid = await api.group(alice, [bob, carol])
    a = await Ws.connect(url, alice.token)
    for i in range(messages):
        await a.send(cid, f"m{i}")
    b = await Ws.connect(url, bob.token)
    c = await Ws.connect(url, carol.token)
    for ws, user, seq in ((b, bob, reads[0]), (c, carol, reads[1])):
        assert (await ws.send(cid, "here"))["type"] == "ack"  # took part: reads are counted (§4.9)
        await ws.read(cid, seq)
        await wait_pointer(db, cid, user.id, seq)
    return cid, [alice, bob, carol], [a, b, c]


async def test_a_flush_writes_every_pointer_marked_before_it_began(
    stack: Stack, w1: Api, db: asyncpg.Connection
) -> None:
    alice, bob, carol = await w1.user(), await w1.user(), await w1.user()
    cid = await w1.group(alice, [bob, carol])
    a = await Ws.connect(w1.base_url, alice.token)
    for i in range(4):
        await a.send(cid, f"m{i}")
    b = await Ws.connect(w1.base_url, bob.token)
    c = await Ws.connect(w1.base_url, carol.token)
    await b.read(cid, 4)
    await flush_after(stack, time.time())  # the next flush (every 1 s in the test stack)
    assert await pointer(db, cid, bob.id) == 4
    await b.read(cid, 2)  # older: Postgres never moves back either
    await c.read(cid, 1)
    await flush_after(stack, time.time())
    assert await pointer(db, cid, carol.id) == 1
    assert await pointer(db, cid, bob.id) == 4
    for ws in (a, b, c):
        await ws.close()


async def test_sigterm_flushes_every_pointer(
    private_redis: str, w1: Api, spawn_worker: Callable[..., Worker], db: asyncpg.Connection
) -> None:
    # Its own Redis database, and no periodic flush: only the shutdown flush can write these.
    worker = spawn_worker(CHATD_REDIS_URL=private_redis, CHATD_RECEIPT_FLUSH_INTERVAL_S="3600")
    owner = await w1.user()
    readers = [await w1.user() for _ in range(20)]
    cid = await w1.group(owner, readers)
    o = await Ws.connect(worker.url, owner.token)
    for i in range(5):
        await o.send(cid, f"m{i}")
    sockets = [await Ws.connect(worker.url, u.token) for u in readers]
    for index, ws in enumerate(sockets):
        await ws.read(cid, index % 5 + 1)
    assert await db.fetchval("SELECT count(*) FROM read_pointers WHERE conversation_id = $1", cid) == 0
    worker.proc.send_signal(signal.SIGTERM)
    # Keep this loop running while the worker drains: its clients must answer the 1012 close
    # handshakes, or the worker waits for them until uvicorn's graceful-shutdown timeout.
    for ws in (o, *sockets):
        assert await ws.wait_closed() == 1012
    assert await asyncio.to_thread(worker.proc.wait, 20) in (0, -signal.SIGTERM)
    found = await db.fetch("SELECT user_id, last_read_seq FROM read_pointers WHERE conversation_id = $1", cid)
    rows = {r["user_id"]: r["last_read_seq"] for r in found}
    assert rows == {u.id: i % 5 + 1 for i, u in enumerate(readers)}


async def test_state_is_rebuilt_from_postgres_after_flushall(
    private_redis: str, w1: Api, spawn_worker: Callable[..., Worker], db: asyncpg.Connection
) -> None:
    worker = spawn_worker(CHATD_REDIS_URL=private_redis, CHATD_RECEIPT_FLUSH_INTERVAL_S="0.5")
    api = Api(worker.url)
    cid, (alice, bob, _), (a, b, c) = await group_with_flushed_reads(api, worker.url, db, 6, (4, 2))
    await b.read(cid, 5)  # newer than the last flush: may be lost, at most one interval's worth
    redis = aioredis.Redis.from_url(private_redis)
    await redis.flushdb()
    await redis.aclose()
    counts = (await api.call("GET", f"/v1/conversations/{cid}/receipts?from=1&to=6", alice.token)).json()
    read_by = [x["read_by"] for x in counts["counts"]]
    assert read_by[:4] == [2, 2, 1, 1] and read_by[5] == 0
    b2 = await Ws.connect(worker.url, bob.token)
    [conv] = [x for x in b2.ready["conversations"] if x["id"] == cid]
    assert conv["last_read_seq"] >= 4, "nothing older than one interval is lost"
    assert (await b2.read(cid, 6))["last_read_seq"] == 6  # and marking goes on from there
    await wait_pointer(db, cid, bob.id, 6)
    for ws in (a, b, c, b2):
        await ws.close()
    await api.http.aclose()


async def test_two_flushers_never_both_run(stack: Stack, private_redis: str) -> None:
    redis = aioredis.Redis.from_url(private_redis)
    pool = await create_pool(stack.database_url, 1, 2)
    state = ReadState(redis)
    first, second = Flusher(Stores(pool), state, 1), Flusher(Stores(pool), state, 1)
    token = await state.acquire_flush_lock(ttl_ms=60_000)
    assert token is not None
    assert await first.flush_once() is None and await second.flush_once() is None
    await state.release_flush_lock(token)
    # An expired holder cannot release a lock that someone else now holds.
    stale = await state.acquire_flush_lock(ttl_ms=50)
    assert stale is not None
    await asyncio.sleep(0.1)
    holder = await state.acquire_flush_lock(ttl_ms=60_000)
    assert holder is not None
    await state.release_flush_lock(stale)
    assert await first.flush_once() is None
    await state.release_flush_lock(holder)
    await pool.close()
    await redis.flushdb()
    await redis.aclose()


async def test_mark_and_count_cost_the_same_redis_work_at_10000_members(
    stack: Stack, spawn_worker: Callable[..., Worker], db: asyncpg.Connection, private_redis: str
) -> None:
    # Only what the marks and counts do is counted (helpers.QUIET_REDIS_WORKER).
    worker = spawn_worker(CHATD_REDIS_URL=private_redis, **QUIET_REDIS_WORKER)
    api = Api(worker.url)
    owner, partner = await api.user(), await api.user()
    members = await bulk_users(db, 10_000)
    big = await api.group(owner, [], title="big")
    for start in range(0, 10_000, 2000):
        names = [m.name for m in members[start : start + 2000]]
        body = {"usernames": names}
        added = await api.call("POST", f"/v1/conversations/{big}/members", owner.token, body)
        assert added.status_code == 200
    small = await api.group(owner, [partner], title="small")
    o = await Ws.connect(worker.url, owner.token)
    for cid in (big, small):
        for i in range(50):
            await o.send(cid, f"m{i}")
    big_base, small_base = 5, 0  # the big group's seqs 1-5 are the five members_added events
    # Give the big group 10,000 distinct read pointers, as if everyone had been reading.
    redis = aioredis.Redis.from_url(private_redis)
    await ReadState(redis).load_room(big, [(m.id, big_base + i % 50 + 1, 0) for i, m in enumerate(members)])
    reader_big = members[123]
    reader_big.token = new_token()
    await db.execute(
        "INSERT INTO tokens (token_hash, user_id) VALUES ($1, $2)",
        hash_token(reader_big.token),
        reader_big.id,
    )

    async def work(reader: User, cid: int, base: int) -> dict[str, int]:
        ws = await Ws.connect(worker.url, reader.token)
        # Takes part (§4.9: only then do others see their reads), and loads the user's state,
        # outside the measurement.
        assert (await ws.send(cid, "here"))["type"] == "ack"
        await ws.read(cid, base + 1)
        await asyncio.sleep(0.6)  # the coalesced push of that mark happens before we count
        before = await redis_calls(redis)
        for seq in range(base + 2, base + 42):
            assert (await ws.read(cid, seq))["last_read_seq"] == seq
            counts = await api.call(
                "GET", f"/v1/conversations/{cid}/receipts?from={seq}&to={seq}", owner.token
            )
            assert counts.status_code == 200
        await asyncio.sleep(0.6)  # and the last window's push happens before we count again
        after = await redis_calls(redis)
        await ws.close()
        return {k: after[k] - before[k] for k in after}

    big_work = await work(reader_big, big, big_base)
    small_work = await work(partner, small, small_base)
    print(
        f"redis commands for 40 marks + 40 count queries: 10,001 members {big_work}; 2 members {small_work}"
    )
    # The same commands the same number of times: each is O(log members) on a sorted set,
    # so a 10,000-member group costs the same order of Redis work as a 2-member one.
    data = [k for k in REDIS_WORK if k != "evalsha"]
    assert {k: big_work[k] for k in data} == {k: small_work[k] for k in data}
    # A mark moves the read and the delivery pointer (a read is a delivery too); each count
    # counts readers and deliveries: 40 counts + 40 pushed, coalesced, twice.
    assert big_work["zadd"] == 80 and big_work["zcount"] == 160
    # Script calls also count the coalescing windows (one per window), which depend on timing.
    assert abs(big_work["evalsha"] - small_work["evalsha"]) <= 3
    await o.close()
    await api.http.aclose()
    await redis.aclose()


async def test_sharing_again_after_redis_data_loss_keeps_counts_right(
    private_redis: str, spawn_worker: Callable[..., Worker], db: asyncpg.Connection
) -> None:
    worker = spawn_worker(CHATD_REDIS_URL=private_redis, CHATD_RECEIPT_FLUSH_INTERVAL_S="0.5")
    api = Api(worker.url)
    cid, (alice, bob, _), (a, b, c) = await group_with_flushed_reads(api, worker.url, db, 3, (3, 2))
    redis = aioredis.Redis.from_url(private_redis)
    await redis.flushdb()
    await redis.aclose()
    for share in (False, True):
        response = await api.call("PUT", "/v1/me/settings", bob.token, {"share_read_state": share})
        assert response.status_code == 200
    counts = (await api.call("GET", f"/v1/conversations/{cid}/receipts?from=1&to=3", alice.token)).json()
    assert [x["read_by"] for x in counts["counts"]] == [2, 2, 1], "carol's stored pointer is not lost"
    for ws in (a, b, c):
        await ws.close()
    await api.http.aclose()
