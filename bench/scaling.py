"""The measured part of docs/scaling.md (issue 25): what one send and one delivery cost in each
component at the headline step of each run, what one core of each component sustains, and the
cores a multiple of today's load needs. `python -m bench scaling [RESULTS.json]` writes it.

Costs come from the steps the headlines come from (bench/headline.py), so they are costs at a
load the server sustains within its latency bound, not at saturation; with `--repeat` each cost
is the median over the runs.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from bench.headline import (
    DURABLE_P99_MS,
    FANOUT_P99_MS,
    FANOUT_STOP_P99_MS,
    GROUPS,
    durable_max,
    fanout_max,
    get,
    runs,
)
from bench.report import cpu_by_group

COMPONENTS = ("workers", "nginx", "postgres", "redis")
HEADROOM = 0.5  # plan each component at half its measured capacity: p99 grows fast past that
APP_HOST_CORES = 8  # the worked example's app host (workers and nginx)
REDIS_SHARD_CORES = 1.0  # Redis runs commands on one thread: a shard is at most one core
PG_PRIMARY_CORES = 32  # the largest primary the example assumes before distributing writes
SCALES = (1, 10, 100, 1000)

Cost = dict[str, float]


def _per_unit(step: dict[str, Any], units: float) -> Cost:
    """CPU milliseconds per unit (a send, a delivery) in each component, from one step."""
    seconds = cpu_by_group(step, "cpu_s")
    return {c: 1000.0 * seconds[c] / units if units > 0 else 0.0 for c in COMPONENTS}


def _headline_step(steps: list[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    return next((st for st in steps if st["offered_rate"] == rate), None)


def _median_cost(costs: list[Cost]) -> Cost | None:
    if not costs:
        return None
    return {c: statistics.median(x[c] for x in costs) for c in COMPONENTS}


def measure(results: dict[str, Any]) -> dict[str, Any]:
    """The per-unit costs and headline rates, each the median over the runs."""
    durable: list[Cost] = []
    durable_calls: list[float] = []
    durable_rates: list[float] = []
    groups: dict[str, dict[str, list[Any]]] = {}
    for scenarios in runs(results):
        steps = get(scenarios, "durable", "steps")
        if steps:
            best = durable_max(steps)
            step = _headline_step(steps, best["rate"])
            durable_rates.append(best["rate"])
            if step is not None:
                durable.append(_per_unit(step, step["acked"]))
                if step.get("redis_calls_per_send") is not None:
                    durable_calls.append(step["redis_calls_per_send"])
        for g, entry in (get(scenarios, "fanout", "by_group_size") or {}).items():
            if g not in GROUPS or not entry.get("steps"):
                continue
            best = fanout_max(entry["steps"], int(g))
            step = _headline_step(entry["steps"], best["msgs"])
            got = groups.setdefault(g, {"msg": [], "delivery": [], "calls": [], "msgs": []})
            got["msgs"].append(best["msgs"])
            if step is not None:
                got["msg"].append(_per_unit(step, step["acked"]))
                got["delivery"].append(_per_unit(step, step["delivered"]))
                if step.get("redis_calls_per_send") is not None:
                    got["calls"].append(step["redis_calls_per_send"])
    idle = get(results, "scenarios", "idle") or {}
    return {
        "durable": {
            "rate": statistics.median(durable_rates) if durable_rates else None,
            "per_send": _median_cost(durable),
            "redis_calls": statistics.median(durable_calls) if durable_calls else None,
        },
        "groups": {
            g: {
                "msgs": statistics.median(got["msgs"]),
                "per_msg": _median_cost(got["msg"]),
                "per_delivery": _median_cost(got["delivery"]),
                "redis_calls": statistics.median(got["calls"]) if got["calls"] else None,
            }
            for g, got in sorted(groups.items(), key=lambda kv: int(kv[0]))
        },
        "idle": {
            "connections": idle.get("held"),
            "worker_kb": idle.get("worker_rss_per_connection_kb"),
            "nginx_kb": idle.get("nginx_rss_per_connection_kb"),
        },
    }


def _n(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _capacity(ms: float) -> str:
    return "-" if ms <= 0 else f"{1000.0 / ms:,.0f}"


def cost_table(model: dict[str, Any]) -> list[str]:
    head = " / ".join(COMPONENTS)
    lines = [
        f"| unit (measured at) | CPU ms per unit: {head} | units/s per core: {head}"
        " | Redis commands per message |",
        "|---|---|---|---|",
    ]

    def row(label: str, cost: Cost | None, calls: float | None) -> None:
        if cost is None:
            return
        ms = " / ".join(_n(cost[c]) for c in COMPONENTS)
        per_core = " / ".join(_capacity(cost[c]) for c in COMPONENTS)
        lines.append(f"| {label} | {ms} | {per_core} | {_n(calls)} |")

    d = model["durable"]
    at = f"{_n(d['rate'])} sends/s, p99 ack <= {DURABLE_P99_MS:g} ms"
    row(f"1:1 send ({at})", d["per_send"], d["redis_calls"])
    for g, m in model["groups"].items():
        at = f"{_n(m['msgs'])} msg/s, p99 deliver <= {FANOUT_P99_MS:g} ms"
        row(f"message in groups of {g} ({at})", m["per_msg"], m["redis_calls"])
        row(f"delivery in groups of {g} (same step)", m["per_delivery"], None)
    return lines


def plan(model: dict[str, Any], group: str = "10") -> list[dict[str, Any]]:
    """Cores each component needs at each multiple of today's load: the groups-of-`group`
    headline (messages/s) of this box, at HEADROOM of each core's measured capacity."""
    base = model["groups"].get(group)
    if base is None or base["per_msg"] is None:
        return []
    out = []
    for scale in SCALES:
        rate = scale * base["msgs"]
        cores = {c: rate * base["per_msg"][c] / 1000.0 / HEADROOM for c in COMPONENTS}
        app = cores["workers"] + cores["nginx"]
        out.append(
            {
                "scale": scale,
                "msgs": rate,
                "deliveries": rate * (int(group) - 1),
                "cores": cores,
                "app_hosts": max(1, math.ceil(app / APP_HOST_CORES)),
                "redis_shards": max(1, math.ceil(cores["redis"] / REDIS_SHARD_CORES)),
                "pg_primaries": max(1, math.ceil(cores["postgres"] / PG_PRIMARY_CORES)),
            }
        )
    return out


def plan_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| load | messages/s | deliveries/s | cores: workers / nginx / postgres / redis"
        f" | app hosts ({APP_HOST_CORES} cores) | Redis shards | Postgres write primaries"
        f" (<= {PG_PRIMARY_CORES} cores each) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cores = " / ".join(_n(r["cores"][c], 2) for c in COMPONENTS)
        lines.append(
            f"| {r['scale']}x | {r['msgs']:,.0f} | {r['deliveries']:,.0f} | {cores} | {r['app_hosts']}"
            f" | {r['redis_shards']} | {r['pg_primaries']} |"
        )
    return lines


def topology(row: dict[str, Any]) -> str:
    """What to run at one row of the plan, by the rules in docs/scaling.md."""
    app = row["app_hosts"]
    if row["scale"] == 1:
        return "one box as `site.yml` deploys it (a standby data host beside it, docs/operations.md)"
    parts = [
        f"{app} app host{'s' if app > 1 else ''} of {APP_HOST_CORES} cores (workers and nginx) behind a TCP"
        " load balancer",
    ]
    if row["redis_shards"] == 1:
        parts.append("one Redis (with a replica to fail over to)")
    else:
        parts.append(f"Redis Cluster: {row['redis_shards']} primaries, a replica each (sharded pub/sub)")
    pg = row["cores"]["postgres"]
    if row["pg_primaries"] == 1:
        parts.append(
            f"one Postgres primary with {math.ceil(pg)} or more cores for writes, a synchronous"
            " standby, history and catch-up reads on replicas"
        )
    else:
        parts.append(
            f"Postgres writes beyond one primary ({pg:,.0f} cores): messages distributed by"
            f" conversation over {row['pg_primaries']} primaries (Citus), each with a standby"
        )
    return "; ".join(parts)


def measured_section(results: dict[str, Any]) -> list[str]:
    model = measure(results)
    idle = model["idle"]
    n = len(runs(results))
    lines = [
        f"Generated by `python -m bench scaling` from `{results.get('name', '?')}`"
        f" ({results.get('started', '?')},"
        f" {n} run{'s' if n != 1 else ''}; each cost the median over the runs, taken at the step each"
        f" headline comes from). Machine: {get(results, 'machine', 'cpus')} cores.",
        "",
        *cost_table(model),
        "",
    ]
    if idle["worker_kb"] is not None:
        lines += [
            f"Memory per idle connection: chatd workers {_n(idle['worker_kb'])} KB, nginx"
            f" {_n(idle['nginx_kb'])} KB ({_n(idle['connections'])} connections held).",
            "",
        ]
    rows = plan(model)
    if rows:
        lines += [
            "Cores needed at multiples of today's load (this box's groups-of-10 headline), each"
            f" component planned at {HEADROOM:.0%} of its measured capacity per core:",
            "",
            *plan_table(rows),
            "",
            *[f"- **{r['scale']}x**: {topology(r)}." for r in rows],
            "",
        ]
    return lines


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{b / a:.2f}x"


def cluster_section(single: dict[str, Any], cluster: dict[str, Any]) -> list[str]:
    """The same scenarios on one Redis and on a Redis Cluster, run one after the other: what
    sharding fan-out and keys costs and gains on this box."""
    one, many = measure(single), measure(cluster)
    topology = get(cluster, "config", "redis_cluster") or {}
    lines = [
        f"Generated by `python -m bench scaling --cluster` from `{single.get('name', '?')}`"
        f" ({single.get('started', '?')}) and `{cluster.get('name', '?')}` ({cluster.get('started', '?')}):"
        f" the same scenarios, chatd on one Redis, then on a local Redis Cluster of"
        f" {topology.get('primaries', '?')} primaries and {topology.get('replicas', '?')} replicas"
        " (sharded pub/sub), all on this box's"
        f" {get(cluster, 'machine', 'cpus')} cores.",
        "",
        "| figure | one Redis | Redis Cluster | cluster / one |",
        "|---|---|---|---|",
    ]

    def row(label: str, a: float | None, b: float | None, digits: int = 3) -> None:
        lines.append(f"| {label} | {_n(a, digits)} | {_n(b, digits)} | {_ratio(a, b)} |")

    def cost(model: dict[str, Any], *path: str) -> float | None:
        value: Any = model
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return float(value) if value is not None else None

    row(f"1:1 sends/s at p99 ack <= {DURABLE_P99_MS:g} ms", one["durable"]["rate"], many["durable"]["rate"])
    for g in GROUPS:
        a, b = one["groups"].get(g, {}), many["groups"].get(g, {})
        n = int(g) - 1
        row(
            f"deliveries/s in groups of {g} at p99 <= {FANOUT_P99_MS:g} ms",
            a.get("msgs", 0) * n or None,
            b.get("msgs", 0) * n or None,
        )
    for g in GROUPS:
        row(
            f"deliveries/s in groups of {g} at saturation (p99 <= {FANOUT_STOP_P99_MS / 1000:g} s)",
            get(single, "headlines", f"fanout/{g}", "saturation_median"),
            get(cluster, "headlines", f"fanout/{g}", "saturation_median"),
        )
    for component in ("redis", "workers"):
        row(
            f"{component} CPU ms per 1:1 send",
            cost(one, "durable", "per_send", component),
            cost(many, "durable", "per_send", component),
        )
        row(
            f"{component} CPU ms per message in groups of 10",
            cost(one, "groups", "10", "per_msg", component),
            cost(many, "groups", "10", "per_msg", component),
        )
    row(
        "Redis commands per 1:1 send (all primaries)",
        one["durable"]["redis_calls"],
        many["durable"]["redis_calls"],
    )
    return [*lines, ""]


BEGIN = "<!-- measured: begin (python -m bench scaling) -->"
END = "<!-- measured: end -->"
CLUSTER_BEGIN = "<!-- cluster: begin (python -m bench scaling --cluster) -->"
CLUSTER_END = "<!-- cluster: end -->"


def _replace(doc: Path, begin: str, end: str, lines: list[str]) -> None:
    """Replace the block of `doc` between `begin` and `end`, leaving the prose alone."""
    text = doc.read_text()
    head, found, rest = text.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not found or not found_end:
        raise SystemExit(f"{doc}: no measured block ({begin} ... {end})")
    doc.write_text(head + begin + "\n" + "\n".join(lines) + end + tail)


def write(results: dict[str, Any], doc: Path) -> None:
    _replace(doc, BEGIN, END, measured_section(results))


def write_cluster(single: dict[str, Any], cluster: dict[str, Any], doc: Path) -> None:
    _replace(doc, CLUSTER_BEGIN, CLUSTER_END, cluster_section(single, cluster))
