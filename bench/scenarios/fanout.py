"""Scenario 2: fan-out in groups of 2, 10, 100 and 1,000 members (recipients spread over workers)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from bench.context import Ctx, Placement, log
from bench.fanramp import ramp, sizes
from bench.population import Api, User
from bench.steps import Sends


def members(ctx: Ctx) -> int:
    return 100 if ctx.quick else 1000


def partitions(count: int, seed: int = 6) -> dict[int, list[list[int]]]:
    """For each group size, the member indexes of each group (shuffled differently per size)."""
    rng = random.Random(seed)
    out: dict[int, list[list[int]]] = {}
    for group in sizes(count):
        order = list(range(count))
        rng.shuffle(order)
        out[group] = [order[k : k + group] for k in range(0, count - group + 1, group)]
    return out


async def _population(
    url: str, count: int, parts: dict[int, list[list[int]]]
) -> tuple[list[User], dict[int, list[int]]]:
    async with Api(url) as api:
        users = await api.users(count)
        cids: dict[int, list[int]] = {}
        for group, groups in parts.items():
            cids[group] = list(
                await asyncio.gather(
                    *(api.group(users[g[0]], [users[i] for i in g], f"g{group}") for g in groups)
                )
            )
        return users, cids


def run(
    ctx: Ctx, ws_url: str | None = None, servers: dict[str, int] | None = None, label: str = "fanout"
) -> dict[str, Any]:
    """chatd's scenario 2; a peer (node-durable) passes its own `ws_url` and server process trees."""
    assert ctx.stack is not None
    count = members(ctx)
    parts = partitions(count)
    users, cids = asyncio.run(_population(ctx.stack.url, count, parts))
    fleet = ctx.fleet()
    try:
        place = Placement(len(fleet))
        where = [place.add({"token": u.token, "tag": "member"}, n) for n, u in enumerate(users)]
        connected = place.connect(fleet, ws_url or ctx.ws_url, ctx)
        log(f"{label}: {connected['connected']} members connected ({connected['failed']} failed)")
        sends_by_size: dict[int, Sends] = {}
        for group, groups in parts.items():
            sends: Sends = [[] for _ in range(len(fleet))]
            for members_, cid in zip(groups, cids[group], strict=True):
                agent, local = where[members_[0]]
                sends[agent].append((local, cid))
            sends_by_size[group] = sends
        roots = None if servers is None else {**servers, **fleet.pids}
        by_size = ramp(ctx, fleet, sends_by_size, label, roots=roots)
        order = fleet.order("member")
    finally:
        fleet.close()
    return {"members": count, "connect": connected, "by_group_size": by_size, "members_seq_order": order}
