"""A Redis Cluster primary fails mid-conversation: nothing acked is lost, every online member
catches up, in order, once (cluster_broker.py's repair and the hub's resync).

Two workers on a local 3+3 cluster of the test's own; a group with members online on both;
messages flowing while the primary that serves the conversation's channel is killed (kill -9:
its replica is promoted after the node timeout) or handed over (CLUSTER FAILOVER on the
replica). The timings are printed (pytest -s) and quoted in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatd.devcluster import Cluster, free_ports, start_cluster
from chatd.fanout import conversation_channel
from tests.conftest import Worker
from tests.helpers import Api, Ws

SEND_EVERY_S = 0.02
AFTER_TAKEOVER_S = 2.0  # messages keep flowing this long after the new primary took over


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    found = start_cluster(tmp_path / "redis", free_ports(6), "failover-test")
    try:
        yield found
    finally:
        found.stop()


async def sender(ws: Ws, cid: int, acked: list[int], stop: asyncio.Event) -> None:
    """Send until stopped; keep the seq of every acked message (an error is not an ack)."""
    n = 0
    while not stop.is_set():
        n += 1
        reply = await ws.send(cid, f"message {n}")
        if reply["type"] == "ack":
            acked.append(reply["seq"])
        await asyncio.sleep(SEND_EVERY_S)


async def has_all(ws: Ws, cid: int, seqs: list[int], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not set(seqs) <= {f["seq"] for f in ws.messages(cid)}:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("how", ["kill", "handover"])
async def test_primary_fails_mid_conversation(
    how: str, cluster: Cluster, spawn_worker: Callable[..., Worker]
) -> None:
    env = {"CHATD_REDIS_URL": cluster.seed_url, "CHATD_REDIS_CLUSTER": "on"}
    a, b = Api(spawn_worker(**env).url), Api(spawn_worker(**env).url)
    owner, m1, m2 = await a.user(), await a.user(), await a.user()
    cid = await a.group(owner, [m1, m2])
    sending = await Ws.connect(a.base_url, owner.token)
    members = [
        await Ws.connect(b.base_url, owner.token),  # the sender's other device
        await Ws.connect(b.base_url, m1.token),
        await Ws.connect(a.base_url, m2.token),
        await Ws.connect(b.base_url, m2.token),
    ]
    acked: list[int] = []
    stop = asyncio.Event()
    flowing = asyncio.create_task(sender(sending, cid, acked, stop))
    try:
        while len(acked) < 10:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.gather(*(has_all(ws, cid, acked) for ws in members))

        channel = conversation_channel(cid)
        primary = cluster.primary_for(channel)
        began = time.monotonic()
        if how == "kill":
            cluster.kill(primary)
        else:
            cluster.failover(cluster.replica_of(primary))
        await asyncio.to_thread(cluster.wait_moved, channel, primary)
        took_over = time.monotonic() - began
        during = list(acked)  # acked up to the takeover: published to a primary that went away
        await asyncio.gather(*(has_all(ws, cid, during) for ws in members))
        caught_up = time.monotonic() - began
        await asyncio.sleep(AFTER_TAKEOVER_S)
    finally:
        stop.set()
        await flowing
    await asyncio.gather(*(has_all(ws, cid, acked) for ws in members))
    for ws in [sending, *members]:
        seqs = [f["seq"] for f in ws.messages(cid)]
        assert seqs == sorted(set(seqs)), "a duplicate or out of order"
        assert seqs == sorted(acked), "a message missing, or one never acked"
    print(
        f"\n{how}: new primary after {took_over:.2f} s, every member caught up after {caught_up:.2f} s;"
        f" {len(acked)} messages acked, {len(during)} before the takeover"
    )
    for api in (a, b):  # the workers are ready again (nginx sends them new connections)
        assert (await api.call("GET", "/readyz")).status_code == 200
        await api.http.aclose()
    for ws in [sending, *members]:
        await ws.close()
