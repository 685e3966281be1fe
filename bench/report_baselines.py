"""The parts of docs/benchmarks.md about headlines and baselines (issue 23): the medians table,
the database ceiling, the load-generator ceiling and which figures are the generators' limit."""

from __future__ import annotations

from typing import Any

from bench.headline import (
    DURABLE_P99_MS,
    FANOUT_P99_MS,
    GENERATOR_BOUND,
    fanout_max,
    generator_bound,
    medians,
    runs,
    saturation,
)


def _positive(v: Any) -> Any:
    """A CPU figure, or None if it came out negative (an accounting race; older results files)."""
    return None if isinstance(v, int | float) and v < 0 else v


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


FAN_ORDER: tuple[str, ...] = ("fanout", "node-durable", "sio-node", "sio-python")
FAN_ORDER += ("loadgen-ceiling-chatd", "loadgen-ceiling-sio")
HEADLINE_LABELS = {
    "durable": "chatd",
    "node-durable": "(e) Node.js like-for-like durable peer",
    "synapse": "(d) Synapse (bound: p99 ack <= 1 s)",
    "fanout": "chatd",
    "sio-python": "(b) python-socketio",
    "sio-node": "(c) Node.js Socket.IO",
    "loadgen-ceiling-sio": "load-generator ceiling, Socket.IO protocol",
    "loadgen-ceiling-chatd": "load-generator ceiling, chatd's protocol",
}


def headlines(results: dict[str, Any]) -> list[str]:
    med = results.get("headlines") or medians(results)
    n = len(runs(results))
    out = [
        "",
        f"## Headlines ({f'median of {n} runs, min-max beside it' if n > 1 else 'one run'})",
        "",
        "The highest offered rate within the bound with every lower step passing (bench/headline.py);"
        ' "top" marks a ramp that never failed (its maximum is higher). Step tables further down are'
        + (" run 1's." if n > 1 else " this run's."),
        "",
        f"| durable 1:1 sends/s at p99 ack <= {DURABLE_P99_MS:g} ms | median | min-max | each run | top |",
        "|---|---|---|---|---|",
    ]
    for key in ("durable", "node-durable", "synapse"):
        if key in med:
            f = med[key]
            out.append(
                f"| {HEADLINE_LABELS[key]} | **{fmt(f['median'])}** | {fmt(f['min'])}-{fmt(f['max'])}"
                f" | {', '.join(map(fmt, f['runs']))} | {'top' if f['top'] else ''} |"
            )
    out += [
        "",
        f"| fan-out deliveries/s at p99 <= {FANOUT_P99_MS:g} ms | group | median | min-max | each run | top"
        " | saturation (p99 <= 2 s), median |",
        "|---|---|---|---|---|---|---|",
    ]
    order = [*FAN_ORDER, *(k.split("/")[0] for k in med if "/" in k)]
    fan = sorted(
        (k for k in med if "/" in k), key=lambda k: (int(k.split("/")[1]), order.index(k.split("/")[0]))
    )
    for key in fan:
        source, g = key.split("/")
        f = med[key]
        out.append(
            f"| {HEADLINE_LABELS.get(source, source)} | {g} | **{fmt(f['median'])}**"
            f" | {fmt(f['min'])}-{fmt(f['max'])} | {', '.join(map(fmt, f['runs']))}"
            f" | {'top' if f['top'] else ''} | {fmt(f['saturation_median'])} |"
        )
    return [*out, ""]


def _cores(step: dict[str, Any], prefix: str) -> float:
    total = float(sum(v for k, v in step["cpu_s"].items() if k.startswith(prefix)))
    return round(total / float(step["duration_s"]), 2)


def loadgen_ceiling(data: dict[str, Any], results: dict[str, Any]) -> list[str]:
    out = ["### Load-generator ceiling", ""]
    if "sio" not in data and "chatd" not in data:
        return [*out, f"Not measured: {data.get('error', 'not run')}", ""]
    out += [
        "The same load generators against the cheapest possible server (bench/peers/ceiling_server.js: one"
        " Node `ws` process, no nginx, no storage, no Redis, frames parsed only as far as routing needs),"
        " in each protocol the generators speak. Where it stops keeping up, the generators (or the box)"
        " do. Run 1:",
        "",
        f"| protocol | group | deliveries/s at p99 <= {FANOUT_P99_MS:g} ms | saturation deliveries/s"
        " (p99 <= 2 s) | load-generator CPU there, cores | relay CPU there, cores | load | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for proto in ("sio", "chatd"):
        for g, e in sorted(data.get(proto, {}).get("by_group_size", {}).items(), key=lambda kv: int(kv[0])):
            head, sat = fanout_max(e["steps"], int(g)), saturation(e["steps"], int(g))
            level = sat["deliveries_per_s"]
            at = next((st for st in e["steps"] if st.get("offered_deliveries_per_s") == level), None)
            top = " (top step)" if head["top"] else ""
            gen, relay = (_cores(at, "loadgen"), _cores(at, "relay")) if at else (None, None)
            # one Node process: near a whole core, the relay may be what stopped, not the generators
            note = "relay near a core: it may be the limit" if relay is not None and relay >= 0.9 else ""
            out.append(
                f"| {proto} | {g} | {fmt(head['rate'])}{top} | {fmt(level)} | {fmt(gen)} | {fmt(relay)}"
                f" | {at['loadavg_after'].split()[0] if at else '-'} | {note} |"
            )
    bound = generator_bound(results.get("headlines") or medians(results))
    if bound:
        out += [
            "",
            f"Each server's headline against the ceiling in its protocol (medians); at"
            f" {GENERATOR_BOUND:.0%} of it or more the figure is the load generators' limit:",
            "",
            "| server | group | headline deliveries/s | ceiling | share | reading |",
            "|---|---|---|---|---|---|",
        ]
        for b in bound:
            out.append(
                f"| {HEADLINE_LABELS.get(b['server'], b['server'])} | {b['group']} | {fmt(b['figure'])}"
                f" | {fmt(b['ceiling'])} | {fmt(b['share'])} | {b['verdict']} |"
            )
    return [*out, ""]


def db_ceiling(ceiling: dict[str, Any]) -> list[str]:
    if "inserts_per_s" not in ceiling:
        return [f"Baseline (a), the database ceiling: {ceiling.get('error', 'not run')}", ""]
    pg = ceiling.get("cpu_s_per_1000_inserts", {}).get("postgres")
    pg_us = None if pg is None else round(pg * 1000, 1)
    out = [
        "Baseline (a), the database ceiling, on the same PostgreSQL. **Per row**: asyncpg, one"
        f" INSERT+COMMIT per message into a table shaped like `messages` without chatd's constraints,"
        f" concurrency {ceiling['concurrency']}: **{ceiling['inserts_per_s']} rows/s**, latency"
        f" p50/p99/p999 {pcts(ceiling['latency_ms'])} ms, PostgreSQL CPU"
        f" {fmt(pg_us)} µs per row (load `{ceiling['loadavg_after']}`).",
        "",
    ]
    grouped = ceiling.get("grouped", [])
    if grouped:
        out += [
            "**Grouped**, chatd's own group commit (`MessageStore.append_many`: the `chatd_append_many`"
            " statement, one COMMIT per batch, with chatd's Python around it) into chatd's real schema"
            " (migrations applied, 1:1 conversations and members), each batch one row per conversation,"
            f" {grouped[0]['concurrency']} batches in flight, closed loop. A server that batches sends"
            " per COMMIT is bounded by these rows/s, not by the per-row figure. The batch sizes chatd"
            " reaches are in its durable step table (messages per COMMIT).",
            "",
            "| rows per batch | rows/s | statement p50 / p99 / p999 ms | PostgreSQL CPU µs per row | load |",
            "|---|---|---|---|---|",
        ]
        for g in grouped:
            out.append(
                f"| {g['batch']} | **{fmt(g['rows_per_s'])}** | {pcts(g['statement_ms'])}"
                f" | {fmt(_positive(g['postgres_cpu_us_per_row']))} | {g['loadavg_after'].split()[0]} |"
            )
        out.append("")
    return out


def pcts(d: dict[str, Any]) -> str:
    return f"{fmt(d['p50'])} / {fmt(d['p99'])} / {fmt(d['p999'])}"
