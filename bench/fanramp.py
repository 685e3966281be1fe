"""The fan-out ramp shared by chatd (scenario 2) and the relay peers (b) and (c).

For each group size G the same M connected members are split into M // G groups; each
group's first member sends. The offered rate is set in deliveries per second (messages/s
times G - 1 other members) and raised until deliveries fall behind: fewer than 95 % of the
expected deliveries arrive within the drain time, or deliveries/s drop below 90 % of the
offered rate, or p99 send->deliver passes 2 s.
"""

from __future__ import annotations

import os
from typing import Any

from bench.context import Ctx
from bench.loadgen.fleet import Fleet
from bench.steps import Sends, public, run_step, settle

QUICK_LEVELS = [2000]
FULL_LEVELS = [1000, 2000, 4000, 6000, 9000, 13000, 18000, 25000, 35000, 50000, 70000, 100000]
MAX_P99_MS = 2000.0


def sizes(members: int) -> list[int]:
    """Group sizes to ramp; BENCH_FANOUT_SIZES (e.g. "100") picks some of them."""
    wanted = os.environ.get("BENCH_FANOUT_SIZES")
    chosen = [int(g) for g in wanted.split(",")] if wanted else [2, 10, 100, 1000]
    return [g for g in chosen if g <= members]


def keeps_up(step: dict[str, Any], group: int) -> bool:
    expected = step["sent"] * (group - 1)
    p99 = step["deliver_ms"]["p99"]
    offered = step["offered_rate"] * (group - 1)
    return (
        expected > 0
        and step["delivered"] >= 0.95 * expected
        and step["deliveries_per_s"] >= 0.9 * offered
        and p99 is not None
        and p99 <= MAX_P99_MS
    )


def ramp(
    ctx: Ctx, fleet: Fleet, sends_by_size: dict[int, Sends], label: str, roots: dict[str, int] | None = None
) -> dict[str, Any]:
    duration, drain = (1.0, 1.0) if ctx.quick else (6.0, 3.0)
    base = QUICK_LEVELS if ctx.quick else FULL_LEVELS
    out: dict[str, Any] = {}
    step_no = 1000
    for group, sends in sends_by_size.items():
        steps: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        # small groups: each delivery costs a durable send, so start lower
        levels = ([250, 500] if group <= 2 and not ctx.quick else []) + base
        for level in levels:
            rate = level / (group - 1)
            step_no += 1
            step = run_step(
                ctx,
                fleet,
                step_no,
                rate,
                duration,
                sends,
                drain=drain,
                roots=roots,
                label=f"{label} G={group}",
            )
            step["offered_deliveries_per_s"] = level
            if not keeps_up(step, group):
                step["settle_s"] = settle(ctx, roots if roots is not None else ctx.roots(fleet))
                steps.append(public(step))
                break
            steps.append(public(step))
            best = step
        entry: dict[str, Any] = {
            "groups": sum(len(s) for s in sends),
            "steps": steps,
            "max_deliveries_per_s": best["deliveries_per_s"] if best else 0,
            "max_messages_per_s": best["offered_rate"] if best else 0,
        }
        if group == 10 and best is not None:
            step_no += 1
            half = run_step(
                ctx,
                fleet,
                step_no,
                best["offered_rate"] / 2,
                duration,
                sends,
                drain=drain,
                roots=roots,
                label=f"{label} G=10 half-max",
            )
            entry["half_max_rate"] = public(half)
        out[str(group)] = entry
    return out
