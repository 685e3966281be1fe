"""Issue 23's targets (and issue 6's that stay), judged on the headline figures of bench/headline.py:
the highest offered rate within the bound with every lower step passing, the median of the
runs (`--repeat`). Ratios compare figures measured in the same invocation."""

from __future__ import annotations

import statistics
from typing import Any

from bench.headline import (
    DURABLE_P99_MS,
    FANOUT_P99_MS,
    FANOUT_SOURCES,
    GROUPS,
    fanout_keeps_up,
    generator_bound,
    medians,
    offered_deliveries,
    runs,
    spread,
)
from bench.headline import get as _get

Row = dict[str, Any]
CPU_US_PER_DELIVERY = 12.0
CPU_GROUP = "100"  # the worker CPU per delivery is compared in groups of 100 (issue 23)
CPU_PEERS = ("node-durable", "sio-node")


def _ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b <= 0:
        return None
    return round(a / b, 2)


def _row(target: str, measured: str, ratio: float | None, met: bool | None) -> Row:
    return {"target": target, "measured": measured, "ratio": ratio, "met": met}


def _bounds(ours: dict[str, Any], peer: dict[str, Any]) -> str:
    """What a ramp that never failed, or a figure at the load generators' ceiling, means for the
    ratio."""
    notes = []
    if peer["top"]:
        notes.append("peer kept up at the top step: ratio is an upper bound")
    elif peer.get("at_ceiling"):
        notes.append("peer at the load generators' ceiling: ratio is an upper bound")
    if ours["top"]:
        notes.append("chatd kept up at the top step: ratio is a lower bound")
    elif ours.get("at_ceiling"):
        notes.append("chatd at the load generators' ceiling: ratio is a lower bound")
    return f" ({'; '.join(notes)})" if notes else ""


def _versus(
    target: str,
    ours: dict[str, Any] | None,
    peer: dict[str, Any] | None,
    need: float,
    unit: str,
) -> Row:
    if ours is None or peer is None:
        return _row(target, f"{spread(ours, unit)} vs {spread(peer, unit)}", None, None)
    r = _ratio(ours["median"], peer["median"])
    measured = f"{spread(ours, unit, top=False)} vs {spread(peer, unit, top=False)}" + _bounds(ours, peer)
    # a ratio that is only an upper bound cannot show the target met, a lower bound cannot show it missed
    upper = peer["top"] or peer.get("at_ceiling", False)
    lower = ours["top"] or ours.get("at_ceiling", False)
    met = None if r is None else r >= need
    if (met and upper) or (met is False and lower):  # the bound points the wrong way
        met = None
    return _row(target, measured, r, met)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:g} ms"


def _fmt_p99(p99s: list[float]) -> str:
    if len(p99s) == 1:
        return f"{p99s[0]:g}"
    return f"{statistics.median(p99s):g} (median; {min(p99s):g}-{max(p99s):g})"


def _worker_us(step: dict[str, Any]) -> float:
    per = step.get("cpu_s_per_1000_deliveries", {})
    return round(float(sum(v for k, v in per.items() if k.startswith("worker-"))) * 1000, 1)


def equal_rate_cpu(scenarios: dict[str, Any], group: str = CPU_GROUP) -> dict[str, Any] | None:
    """Worker CPU per delivery (µs) of chatd and of the peers at the highest offered level all of
    them kept pace at (p99 up to the ramp's stop limit), in one run."""
    g = int(group)
    kept: dict[str, dict[float, dict[str, Any]]] = {}
    for key in ("fanout", *CPU_PEERS):
        steps = _get(scenarios, *FANOUT_SOURCES[key], "by_group_size", group, "steps")
        if steps:
            kept[key] = {offered_deliveries(st, g): st for st in steps if fanout_keeps_up(st, g)}
    if not kept.get("fanout"):
        return None
    common = set(kept["fanout"])
    for key in CPU_PEERS:
        if kept.get(key):
            common &= set(kept[key])
    if not common:
        return None
    level = max(common)
    return {"rate": level, **{key: _worker_us(steps[level]) for key, steps in kept.items() if level in steps}}


def targets(results: dict[str, Any]) -> list[Row]:
    med = medians(results)
    for b in generator_bound(med):
        if b["verdict"].startswith("the load generators'"):
            med[f"{b['server']}/{b['group']}"] = {**med[f"{b['server']}/{b['group']}"], "at_ceiling": True}
    every = runs(results)
    s = results.get("scenarios", {})
    n = len(every)
    of = f"median of {n} runs" if n > 1 else "one run"
    rows: list[Row] = [
        _versus(
            f"durable 1:1 sends/s at p99 ack <= {DURABLE_P99_MS:g} ms >= 1.0x the Node like-for-like"
            f" peer (e) ({of})",
            med.get("durable"),
            med.get("node-durable"),
            1.0,
            "/s",
        )
    ]
    for g in GROUPS:
        for peer, need, label in (
            ("node-durable", 1.0, "the Node like-for-like peer (e)"),
            ("sio-node", 0.75, "Node Socket.IO (c)"),
        ):
            rows.append(
                _versus(
                    f"deliveries/s in groups of {g} at p99 <= {FANOUT_P99_MS:g} ms >= {need}x {label} ({of})",
                    med.get(f"fanout/{g}"),
                    med.get(f"{peer}/{g}"),
                    need,
                    "/s",
                )
            )
    rows.append(_cpu_row(every))
    halves = [h for h in (_get(sc, "fanout", "by_group_size", "10", "half_max_rate") for sc in every) if h]
    p99s = [p for p in (_get(h, "deliver_ms", "p99") for h in halves) if p is not None]
    p99 = statistics.median(p99s) if p99s else None
    measured = "not measured"
    if halves:
        rates = "/".join(f"{h['offered_rate']:.1f}" for h in halves)
        measured = f"p99 {_fmt_p99(p99s)} ms at {rates} msg/s"
    rows.append(
        _row(
            f"p99 send->deliver < 100 ms at half of chatd's saturation rate, groups of 10 ({of})",
            measured,
            None,
            None if p99 is None else p99 < 100,
        )
    )
    chatd, syn = med.get("durable"), med.get("synapse")
    r = None if chatd is None or syn is None else _ratio(chatd["median"], syn["median"])
    lower = (
        chatd is not None
        and syn is not None
        and chatd["p99_median"] is not None
        and syn["p99_median"] is not None
        and chatd["p99_median"] < syn["p99_median"]
    )
    rows.append(
        _row(
            ">= 10x Synapse's durable sends/s (d) at a lower p99",
            f"{spread(chatd, '/s')} (p99 {_ms(_get(chatd, 'p99_median'))}) vs {spread(syn, '/s')} at p99"
            f" ack <= 1 s (p99 {_ms(_get(syn, 'p99_median'))})",
            r,
            None if r is None else (r >= 10 and lower),
        )
    )
    rows += _idle_storm(s, every)
    return rows


def _cpu_row(every: list[dict[str, Any]]) -> Row:
    per_run = [c for c in (equal_rate_cpu(sc) for sc in every) if c is not None]
    target = f"chatd worker CPU per delivery at an equal rate (groups of {CPU_GROUP})"
    target += f" <= {CPU_US_PER_DELIVERY:g} µs"
    if not per_run:
        return _row(target, "not measured", None, None)
    ours = statistics.median(c["fanout"] for c in per_run)
    parts = [f"chatd {ours:g} µs"]
    for key in CPU_PEERS:
        got = [c[key] for c in per_run if key in c]
        if got:
            parts.append(f"{key} {statistics.median(got):g} µs")
    rates = sorted({c["rate"] for c in per_run})
    measured = f"{', '.join(parts)} at {'/'.join(f'{r:,.0f}' for r in rates)} deliveries/s"
    if len(per_run) > 1:
        measured += f" (median of {len(per_run)} runs)"
    return _row(target, measured, None, ours <= CPU_US_PER_DELIVERY)


def _idle_storm(s: dict[str, Any], every: list[dict[str, Any]]) -> list[Row]:
    """Idle connections from the first run only (later runs reuse its grown workers); the
    reconnect storm as the median of the runs, nothing missed in any."""
    rows: list[Row] = []
    held = _get(s, "idle", "held")
    kb = _get(s, "idle", "worker_rss_per_connection_kb")
    rows.append(
        _row(
            ">= 15,000 idle connections at <= 30 KB worker RSS each",
            f"{held} held, {kb} KB each" if held is not None else "not measured",
            None,
            None if held is None or kb is None else (held >= 15000 and kb <= 30),
        )
    )
    storms = [st for st in (sc.get("storm", {}) for sc in every) if "clients" in st]
    storm = storms[0] if storms else {}
    if storms:
        times = [st["all_caught_up_s"] for st in storms]
        took = None if None in times else statistics.median(times)
        missing = sum(st["missing"] for st in storms)
        duplicates = sum(st["duplicates"] for st in storms)
        reconnected = min(st["reconnected"] for st in storms)
        ok = reconnected >= 5000 and took is not None and took <= 30 and missing == 0 and duplicates == 0
        measured = (
            f"{reconnected}/{storm['dropped']} caught up in {took} s"
            + (
                f" (median of {len(storms)} runs: {', '.join(f'{t} s' for t in times)})"
                if len(storms) > 1
                else ""
            )
            + f", missing {missing}, duplicates {duplicates}"
        )
    else:
        ok, measured = None, "not measured"
    rows.append(
        _row(
            "reconnect storm: 5,000 clients caught up within 30 s, nothing missed",
            measured,
            None,
            ok if "clients" in storm else None,
        )
    )
    return rows
