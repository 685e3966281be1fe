"""Scenario 3: idle connections. Open as many as the box allows, in batches, and report the
workers' RSS per connection (also nginx's and the load generators').

The box allows 20,000 open files per process: connections are spread over enough load
generators (each under ~9,000 sockets, from several 127.0.0.x source addresses), over the two
nginx workers (19,500 connections each: a proxied socket costs nginx two) and the chatd workers
(one unix socket each). Users have several devices each (as people do); every user has one
direct conversation, so each connection is attached to one topic.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from bench.context import Ctx, Placement, log
from bench.population import Api, User
from bench.procstat import loadavg, open_files, rss_bytes

PER_AGENT = 9000


async def _population(url: str, count: int) -> list[User]:
    async with Api(url) as api:
        users = await api.users(count)
        await asyncio.gather(*(api.direct(users[k], users[k + 1]) for k in range(0, count - 1, 2)))
        return users


def _memory(ctx: Ctx, fleet_pids: dict[str, int]) -> dict[str, Any]:
    assert ctx.stack is not None
    workers = ctx.stack.worker_pids()
    nginx = ctx.stack.nginx_worker_pids()
    return {
        "workers_rss": sum(rss_bytes(p) for p in workers),
        "workers_fds": [open_files(p) for p in workers],
        "nginx_rss": sum(rss_bytes(p) for p in nginx),
        "nginx_fds": [open_files(p) for p in nginx],
        "loadgen_rss": sum(rss_bytes(p) for p in fleet_pids.values()),
    }


def marginal_kb(batches: list[dict[str, Any]], key: str) -> float | None:
    if len(batches) < 2 or batches[-1]["connections"] <= batches[0]["connections"]:
        return None
    grown: float = batches[-1][key] - batches[0][key]
    added: int = batches[-1]["connections"] - batches[0]["connections"]
    return round(grown / added / 1024, 2)


def run(ctx: Ctx) -> dict[str, Any]:
    assert ctx.stack is not None
    target = 1000 if ctx.quick else 18000
    batch = 500 if ctx.quick else 3000
    users = asyncio.run(_population(ctx.stack.url, 100 if ctx.quick else 2000))
    fleet = ctx.fleet(max(ctx.agents, math.ceil(target / PER_AGENT)))
    batches: list[dict[str, Any]] = []
    try:
        time.sleep(1)
        before = _memory(ctx, fleet.pids)
        held = 0
        while held < target:
            place = Placement(len(fleet))
            for n in range(held, min(target, held + batch)):
                place.add({"token": users[n % len(users)].token, "tag": "idle"}, n)
            connected = place.connect(fleet, ctx.ws_url, ctx, concurrency=25)
            held += connected["connected"]
            time.sleep(1)
            mem = _memory(ctx, fleet.pids)
            row = {"connections": held, **connected, **mem, "loadavg": loadavg()}
            batches.append(row)
            log(
                f"idle: {held} held ({connected['failed']} failed, {connected['seconds']} s);"
                f" workers RSS {mem['workers_rss'] / 2**20:.0f} MiB, fds {mem['workers_fds']}"
            )
            if connected["failed"]:
                break
        time.sleep(1 if ctx.quick else 10)
        status = fleet.all("status")
        still_open = sum(s.get("open", 0) for s in status)
        after = _memory(ctx, fleet.pids)
    finally:
        fleet.close()
    conns: int = max(1, int(still_open))

    def per_conn(key: str) -> float:
        delta: float = after[key] - before[key]
        return round(delta / conns / 1024, 2)

    return {
        "target": target,
        "users": len(users),
        "held": still_open,
        "batches": batches,
        "before": before,
        "after": after,
        # marginal: RSS growth from the first to the last batch over the connections added;
        # a before/after difference under-counts when earlier scenarios left free heap behind
        "worker_rss_per_connection_kb": marginal_kb(batches, "workers_rss"),
        "worker_rss_per_connection_kb_before_after": per_conn("workers_rss"),
        "nginx_rss_per_connection_kb": per_conn("nginx_rss"),
        "loadgen_rss_per_connection_kb": per_conn("loadgen_rss"),
    }
