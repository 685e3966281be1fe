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
from bench.headline import FANOUT_P99_MS, FANOUT_STOP_P99_MS, fanout_keeps_up, fanout_max
from bench.loadgen.fleet import Fleet
from bench.steps import Sends, public, run_step, settle

QUICK_LEVELS = [2000]
FULL_LEVELS = [1000, 2000, 4000, 6000, 9000, 13000, 18000, 25000, 35000, 50000, 70000, 100000]
MAX_P99_MS = FANOUT_STOP_P99_MS


def sizes(members: int) -> list[int]:
    """Group sizes to ramp; BENCH_FANOUT_SIZES (e.g. "100") picks some of them."""
    wanted = os.environ.get("BENCH_FANOUT_SIZES")
    chosen = [int(g) for g in wanted.split(",")] if wanted else [2, 10, 100, 1000]
    return [g for g in chosen if g <= members]


def keeps_up(step: dict[str, Any], group: int) -> bool:
    return fanout_keeps_up(step, group, MAX_P99_MS)


def ramp(
    ctx: Ctx,
    fleet: Fleet,
    sends_by_size: dict[int, Sends],
    label: str,
    roots: dict[str, int] | None = None,
    levels: list[int] | None = None,
) -> dict[str, Any]:
    """`levels` (offered deliveries/s) replace the default ramp."""
    duration, drain = (1.0, 1.0) if ctx.quick else (6.0, 3.0)
    base = levels or (QUICK_LEVELS if ctx.quick else FULL_LEVELS)
    out: dict[str, Any] = {}
    step_no = 1000
    for group, sends in sends_by_size.items():
        steps: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        # small groups: each delivery costs a durable send, so start lower
        for level in ([250, 500] if group <= 2 and not ctx.quick else []) + base:
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
        head = fanout_max(steps, group, FANOUT_P99_MS)
        entry: dict[str, Any] = {
            "groups": sum(len(s) for s in sends),
            "steps": steps,
            # the headline (bench/headline.py): offered deliveries/s at p99 <= 100 ms, every
            # lower step passing too
            "max_deliveries_per_s_p99_le_100ms": head["rate"],
            "max_messages_per_s_p99_le_100ms": head["msgs"],
            "kept_up_at_top_step": head["top"],
            # saturation throughput (p99 up to 2 s), not a headline
            "saturation_deliveries_per_s": best["deliveries_per_s"] if best else 0,
            "saturation_messages_per_s": best["offered_rate"] if best else 0,
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
