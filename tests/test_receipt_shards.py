"""On a Redis Cluster the read and delivery pointers spread over the primaries by conversation
(keyspace.conv_shard), as presence does by user: no one primary holds every conversation's
pointers, nor all of one user's (readstate.py)."""

from __future__ import annotations

import time

import pytest
from redis.asyncio.cluster import RedisCluster

from chatd import keyspace
from chatd.devstack import Stack
from chatd.readstate import DELIVERED, dirty_key, flushed_before_key, gone_key, meta_key, room_key, user_key
from tests.helpers import Api, Ws
from tests.test_receipts_flush import flush_after


def holders(stack: Stack, pattern: str) -> set[int]:
    """The primaries holding a key that matches `pattern` (each node scanned on its own)."""
    cluster = stack.cluster()
    any_port = next(iter(cluster.nodes))
    primaries = [
        int(parts[1].split(":")[1].split("@")[0])
        for parts in (line.split() for line in cluster.cli(any_port, "cluster", "nodes").splitlines())
        if "master" in parts[2] and "fail" not in parts[2]
    ]
    return {port for port in primaries if cluster.cli(port, "--scan", "--pattern", pattern).strip()}


@pytest.mark.parametrize("stack", ["cluster"], indirect=True)
async def test_pointers_of_different_conversations_sit_on_different_primaries(stack: Stack, w1: Api) -> None:
    alice = await w1.user()
    others = [await w1.user() for _ in range(8)]
    cids = [await w1.direct(alice, other) for other in others]
    a = await Ws.connect(w1.base_url, alice.token)
    for cid in cids:
        ack = await a.send(cid, "hello")
        assert ack["type"] == "ack", ack
    for other, cid in zip(others, cids, strict=True):
        b = await Ws.connect(w1.base_url, other.token)
        reply = await b.read(cid, 1)
        assert reply["type"] == "read_state", reply
        await b.close()
    for cid in cids:
        await a.send(cid, "again")
        reply = await a.read(cid, 2)
        assert reply["type"] == "read_state", reply
    await a.close()
    rooms = set().union(*(holders(stack, f"chatd:*rr:{cid}") for cid in cids))
    mine = holders(stack, f"chatd:*lr:{alice.id}")
    delivered = holders(stack, f"chatd:*ld:{alice.id}")
    assert len(rooms) >= 2, rooms  # 8 conversations: all on one primary by chance 1 time in 2187
    assert len(mine) >= 2, mine  # alice's read pointers: split by conversation shard
    assert len(delivered) >= 2, delivered  # and her delivery pointers (a read delivers too)


@pytest.mark.parametrize("stack", ["cluster"], indirect=True)
async def test_a_sharing_change_reaches_every_shard_even_one_whose_state_was_lost(
    stack: Stack, w1: Api
) -> None:
    """One script per shard: a shard whose copy of the user's pointers is gone (a failover that
    lost writes) is loaded from Postgres and changed like the others (readstate.set_shared)."""
    alice, bob = await w1.user(), await w1.user()
    groups = [await w1.group(alice, [bob]) for _ in range(6)]
    a = await Ws.connect(w1.base_url, alice.token)
    b = await Ws.connect(w1.base_url, bob.token)
    seqs = {}
    for cid in groups:
        assert (await b.send(cid, "here"))["type"] == "ack"  # takes part (§4.9)
        ack = await a.send(cid, "hello")
        seqs[cid] = ack["seq"]
        await b.wait_seq(cid, ack["seq"])
        assert (await b.read(cid, ack["seq"]))["type"] == "read_state"
    await flush_after(stack, time.time())

    async def read_by() -> list[int]:
        found = []
        for cid in groups:
            params = {"from": seqs[cid], "to": seqs[cid]}
            reply = await w1.call("GET", f"/v1/conversations/{cid}/receipts", alice.token, params=params)
            found.append(reply.json()["counts"][0]["read_by"])
        return found

    assert await read_by() == [1] * 6
    redis = RedisCluster.from_url(stack.redis_url)
    try:
        for cid in groups[:3]:  # bob's state in these shards is lost; the rooms are not
            shard = keyspace.conv_shard(cid, on=True)
            assert await redis.delete(f"chatd:{shard}lr:{bob.id}", f"chatd:{shard}lm:{bob.id}") == 2
    finally:
        await redis.aclose()
    reply = await w1.call("PUT", "/v1/me/settings", bob.token, {"share_read_state": False})
    assert reply.status_code == 200
    assert await read_by() == [0] * 6
    reply = await w1.call("PUT", "/v1/me/settings", bob.token, {"share_read_state": True})
    assert await read_by() == [1] * 6
    await a.close()
    await b.close()


@pytest.mark.parametrize("cluster", [False, True])
def test_key_names_one_redis_as_ever_a_cluster_by_conversation_shard(cluster: bool) -> None:
    """On one Redis a running deployment keeps its keys across the upgrade: the same names."""
    before = keyspace.cluster()
    keyspace.use_cluster(cluster)
    try:
        names = [
            room_key(300),
            user_key(7, 300),
            meta_key(7, 300),
            gone_key(300),
            dirty_key(300),
            dirty_key(300, DELIVERED),
            user_key(7, 300, DELIVERED),
            flushed_before_key(),
        ]
    finally:
        keyspace.use_cluster(before)
    if not cluster:
        assert names == [
            "chatd:rr:300",
            "chatd:lr:7",
            "chatd:lm:7",
            "chatd:rgone:300",
            "chatd:rdirty",
            "chatd:ddirty",
            "chatd:ld:7",
            "chatd:rflushed-before",
        ]
    else:  # 300 % 256 == 44: every key of a mark in conversation 300 is in shard {c:44}
        assert names[:-1] == [
            "chatd:{c:44}rr:300",
            "chatd:{c:44}lr:7",
            "chatd:{c:44}lm:7",
            "chatd:{c:44}rgone:300",
            "chatd:{c:44}rdirty",
            "chatd:{c:44}ddirty",
            "chatd:{c:44}ld:7",
        ]
        assert names[-1] == "chatd:{r}rflushed-before"
