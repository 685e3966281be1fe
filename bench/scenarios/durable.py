"""Scenario 1: durable sends in 1:1 conversations, ramping the offered rate.

Every pair of users has a direct conversation; one side sends, both sides are connected (the
other side's receipt is the send->deliver latency). The ramp stops once p99 send->ack passes
100 ms or the acks fall behind the offered rate.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from bench.context import Ctx, Placement, log
from bench.headline import durable_max, durable_passes
from bench.loadgen.fleet import Fleet
from bench.population import Api
from bench.steps import Sends, public, run_step, settle

QUICK_RATES = [200, 400]
FULL_RATES = [
    100,
    200,
    400,
    600,
    800,
    1000,
    1200,
    1400,
    1700,
    2000,
    2400,
    2800,
    3300,
    4000,
    5000,
    6000,
    7000,
    8000,
]
STOP_P99_MS = 100.0
TARGET_P99_MS = 50.0


async def _population(url: str, pairs: int) -> list[tuple[Any, Any, int]]:
    async with Api(url) as api:
        users = await api.users(2 * pairs)
        senders, receivers = users[:pairs], users[pairs:]
        cids = await asyncio.gather(*(api.direct(a, b) for a, b in zip(senders, receivers, strict=True)))
        return list(zip(senders, receivers, cids, strict=True))


sustained = durable_passes  # acks keep pace, p99 send->ack within a limit


def commit_batches(urls: list[str]) -> tuple[float, float] | None:
    """chatd's `chatd_commit_batch_size` histogram summed over the workers: (sum, count); None if
    no worker serves metrics."""
    total = count = 0.0
    seen = False
    for url in urls:
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.HTTPError:
            continue  # a worker run with CHATD_METRICS=off
        for line in text.splitlines():
            if line.startswith("chatd_commit_batch_size_sum "):
                total += float(line.rsplit(" ", 1)[1])
                seen = True
            elif line.startswith("chatd_commit_batch_size_count "):
                count += float(line.rsplit(" ", 1)[1])
    return (total, count) if seen else None


def ramp(
    ctx: Ctx,
    fleet: Fleet,
    rates: list[int],
    duration: float,
    sends: Sends,
    drain: float,
    label: str,
    roots: dict[str, int] | None = None,
    first_step: int = 0,
    stop_p99_ms: float = STOP_P99_MS,
    metrics: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Raise the offered rate until acks fall behind, or p99 ack passes the stop limit in two
    steps running (one noisy step on a shared box does not end the ramp). With chatd's workers'
    `metrics` URLs, each step records the mean messages per group-commit statement."""
    steps: list[dict[str, Any]] = []
    over = 0
    for n, rate in enumerate(rates):
        before = commit_batches(metrics) if metrics else None
        step = run_step(
            ctx, fleet, first_step + n, rate, duration, sends, drain=drain, roots=roots, label=label
        )
        after = commit_batches(metrics) if metrics else None
        if before and after and after[1] > before[1]:
            step["commit_batch_mean"] = round((after[0] - before[0]) / (after[1] - before[1]), 2)
        steps.append(public(step))
        p99 = step["ack_ms"]["p99"]
        over = over + 1 if p99 is None or p99 > stop_p99_ms else 0
        if over >= 2 or not sustained(step, float("inf")):
            settle(ctx, roots if roots is not None else ctx.roots(fleet))
            break
        if over:
            settle(ctx, roots if roots is not None else ctx.roots(fleet))
    return steps


def run(
    ctx: Ctx, ws_url: str | None = None, servers: dict[str, int] | None = None, label: str = "durable"
) -> dict[str, Any]:
    """chatd's scenario 1; a peer (node-durable) passes its own `ws_url` and server process trees."""
    assert ctx.stack is not None
    pairs = 40 if ctx.quick else 200
    duration, drain = (1.5, 1.0) if ctx.quick else (8.0, 2.0)
    population = asyncio.run(_population(ctx.stack.url, pairs))
    fleet = ctx.fleet()
    try:
        place = Placement(len(fleet))
        sends: Sends = [[] for _ in range(len(fleet))]
        for k, (a, b, cid) in enumerate(population):
            agent, local = place.add({"token": a.token, "tag": "sender"}, k)
            sends[agent].append((local, cid))
            place.add({"token": b.token, "tag": "receiver"}, k + 1)
        connected = place.connect(fleet, ws_url or ctx.ws_url, ctx)
        log(f"{label}: {connected['connected']} clients connected ({connected['failed']} failed)")
        roots = None if servers is None else {**servers, **fleet.pids}
        rates = QUICK_RATES if ctx.quick else FULL_RATES
        # chatd's own commit batch sizes (what baseline (a)'s grouped figures compare with)
        urls = [ctx.stack.metrics_url(i) for i in range(ctx.workers)] if servers is None else None
        steps = ramp(ctx, fleet, rates, duration, sends, drain, label, roots=roots, metrics=urls)
        order = fleet.order("receiver")
    finally:
        fleet.close()
    best = durable_max(steps, TARGET_P99_MS)
    return {
        "pairs": pairs,
        "connect": connected,
        "steps": steps,
        "receivers_seq_order": order,
        # the headline: every step up to this one passed (bench/headline.py)
        "max_rate_p99_ack_le_50ms": best["rate"],
        "kept_up_at_top_step": best["top"],
        # saturation, not a headline: the most acks/s seen whatever the p99
        "saturation_ack_rate": max((s["ack_rate"] for s in steps), default=0),
    }
