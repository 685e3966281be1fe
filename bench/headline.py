"""Headline figures from a run's steps, the same rule for chatd and every peer (issue 23).

A headline is the highest offered rate whose p99 is within the scenario's bound *and* whose
every lower step passed too: a ramp that fails at 600/s and passes at 1,000/s has its
headline below 600/s. Saturation throughput (whatever the p99, up to the ramp's stop limit)
is kept apart and labelled as such. With `--repeat N` each figure is the median of the runs,
the spread (min-max) beside it.
"""

from __future__ import annotations

import statistics
from typing import Any

DURABLE_P99_MS = 50.0  # durable sends: p99 send->ack
FANOUT_P99_MS = 100.0  # fan-out: p99 send->deliver
FANOUT_STOP_P99_MS = 2000.0  # the fan-out ramp's stop limit: saturation is measured up to it
GROUPS = ("10", "100")

Steps = list[dict[str, Any]]


def durable_passes(step: dict[str, Any], p99_limit: float) -> bool:
    """Kept up at this step: acks keep pace and p99 send->ack within `p99_limit`."""
    p99 = step["ack_ms"]["p99"]
    return (
        p99 is not None
        and p99 <= p99_limit
        and step["acked"] >= 0.98 * step["sent"]
        and step["ack_rate"] >= 0.95 * step["offered_rate"]
    )


def offered_deliveries(step: dict[str, Any], group: int) -> float:
    return float(step.get("offered_deliveries_per_s") or step["offered_rate"] * (group - 1))


def fanout_keeps_up(step: dict[str, Any], group: int, p99_limit: float = FANOUT_STOP_P99_MS) -> bool:
    """Deliveries keep pace (95 % arrive, 90 % of the offered rate) and p99 send->deliver is
    within `p99_limit`."""
    expected = step["sent"] * (group - 1)
    p99 = step["deliver_ms"]["p99"]
    return (
        expected > 0
        and step["delivered"] >= 0.95 * expected
        and step["deliveries_per_s"] >= 0.9 * offered_deliveries(step, group)
        and p99 is not None
        and p99 <= p99_limit
    )


def _prefix(steps: Steps, passes: Any) -> tuple[dict[str, Any] | None, bool]:
    """The last step of the run of passing steps from the first: (that step, whether it is the
    ramp's last step, i.e. the server kept up at the top step and its maximum is higher)."""
    best = None
    for step in steps:
        if not passes(step):
            return best, False
        best = step
    return best, best is not None


def durable_max(steps: Steps, p99_limit: float = DURABLE_P99_MS) -> dict[str, Any]:
    """{"rate": headline sends/s, "top": kept up at the top step, "p99": p99 ack there}."""
    best, top = _prefix(steps, lambda st: durable_passes(st, p99_limit))
    return {
        "rate": best["offered_rate"] if best else 0,
        "top": top,
        "p99": best["ack_ms"]["p99"] if best else None,
    }


def fanout_max(steps: Steps, group: int, p99_limit: float = FANOUT_P99_MS) -> dict[str, Any]:
    """{"rate": headline offered deliveries/s, "achieved", "msgs", "top", "p99"} at the bound."""
    best, top = _prefix(steps, lambda st: fanout_keeps_up(st, group, p99_limit))
    return {
        "rate": offered_deliveries(best, group) if best else 0,
        "achieved": best["deliveries_per_s"] if best else 0,
        "msgs": best["offered_rate"] if best else 0,
        "top": top,
        "p99": best["deliver_ms"]["p99"] if best else None,
    }


def saturation(steps: Steps, group: int) -> dict[str, Any]:
    """Saturation throughput: the highest offered deliveries/s of any step that kept pace with p99
    up to the ramp's stop limit (2 s), and what was achieved there. Not a headline."""
    kept = [st for st in steps if fanout_keeps_up(st, group)]
    best = max(kept, key=lambda st: offered_deliveries(st, group), default=None)
    return {
        "deliveries_per_s": offered_deliveries(best, group) if best else 0,
        "achieved": best["deliveries_per_s"] if best else 0,
        "p99": best["deliver_ms"]["p99"] if best else None,
    }


def get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


# figure key -> where its steps are in one run's scenarios, and the kind of ramp
DURABLE_FIGURES: dict[str, tuple[tuple[str, ...], float]] = {
    "durable": (("durable",), DURABLE_P99_MS),
    "node-durable": (("node-durable", "durable"), DURABLE_P99_MS),
    "synapse": (("synapse",), 1000.0),  # Synapse's ramp bound: p99 ack <= 1 s
}
FANOUT_SOURCES = {
    "fanout": ("fanout",),
    "node-durable": ("node-durable", "fanout"),
    "sio-python": ("sio-python",),
    "sio-node": ("sio-node",),
    "loadgen-ceiling-sio": ("loadgen-ceiling", "sio"),
    "loadgen-ceiling-chatd": ("loadgen-ceiling", "chatd"),
}
# which ceiling bounds which server: the protocol the load generators speak to it
CEILING_OF = {
    "fanout": "loadgen-ceiling-chatd",
    "node-durable": "loadgen-ceiling-chatd",
    "sio-python": "loadgen-ceiling-sio",
    "sio-node": "loadgen-ceiling-sio",
}
GENERATOR_BOUND = 0.8  # a figure at 80 % of the ceiling or more is the generators' limit


def figures(scenarios: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One run's headline figures: "durable", "node-durable" (sends/s) and "<source>/<group>"
    (deliveries/s) for every fan-out source and group size it measured."""
    out: dict[str, dict[str, Any]] = {}
    for key, (path, limit) in DURABLE_FIGURES.items():
        steps = get(scenarios, *path, "steps")
        if steps:
            out[key] = durable_max(steps, limit)
    for key, path in FANOUT_SOURCES.items():
        by = get(scenarios, *path, "by_group_size") or {}
        for g, entry in by.items():
            if entry.get("steps"):
                fig = fanout_max(entry["steps"], int(g))
                fig["saturation"] = saturation(entry["steps"], int(g))
                out[f"{key}/{g}"] = fig
    return out


def runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run's scenarios: the first in "scenarios", the others (`--repeat`) in "repeats"."""
    return [results.get("scenarios", {}), *results.get("repeats", [])]


def medians(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """For each headline figure: the median over the runs that measured it, min, max, each
    run's value, and whether any run kept up at its ramp's top step (then it is a lower bound)."""
    per_run = [figures(s) for s in runs(results)]
    keys = list(dict.fromkeys(k for f in per_run for k in f))
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        got = [f[key] for f in per_run if key in f]
        values = [g["rate"] for g in got]
        sat = [g["saturation"]["deliveries_per_s"] for g in got if "saturation" in g]
        p99 = [g["p99"] for g in got if g["p99"] is not None]
        out[key] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "runs": values,
            "top": any(g["top"] for g in got),
            "p99_median": statistics.median(p99) if p99 else None,
            "saturation_median": statistics.median(sat) if sat else None,
        }
    return out


def spread(fig: dict[str, Any] | None, unit: str = "", top: bool = True) -> str:
    """A median figure as "1,000/s (900-1,100, 3 runs)"; `top`: say if a run kept up at its
    ramp's top step."""
    if fig is None:
        return "not measured"
    text = f"{fig['median']:,.0f}{unit}"
    if len(fig["runs"]) > 1:
        text += f" ({fig['min']:,.0f}-{fig['max']:,.0f}, {len(fig['runs'])} runs)"
    if top and fig["top"]:
        text += " (kept up at the top step)"
    return text


def generator_bound(med: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """For each server and group size measured beside a load-generator ceiling: its headline as a
    share of the ceiling's (both at p99 <= 100 ms, medians) and what that means."""
    out: list[dict[str, Any]] = []
    for source, ceiling_key in CEILING_OF.items():
        for g in GROUPS:
            fig, ceiling = med.get(f"{source}/{g}"), med.get(f"{ceiling_key}/{g}")
            if fig is None or ceiling is None:
                continue
            share = round(fig["median"] / ceiling["median"], 2) if ceiling["median"] else None
            if not ceiling["median"]:
                verdict = "no ceiling (the relay failed its first step): not judged"
            elif fig["top"]:
                verdict = "the server kept up at its top step: its limit was not reached"
            elif share is not None and share < GENERATOR_BOUND:
                # the ceiling is at least its figure (more if the relay kept up at its top step)
                verdict = "the server's own limit"
            elif ceiling["top"]:
                verdict = "ceiling not found (the relay kept up at its top step): not judged"
            else:
                verdict = "the load generators' limit, not the server's"
            out.append(
                {
                    "server": source,
                    "group": g,
                    "figure": fig["median"],
                    "ceiling": ceiling["median"],
                    "share": share,
                    "verdict": verdict,
                }
            )
    return out
