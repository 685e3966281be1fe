"""One measured step: every load generator sends open-loop at its share of a total rate."""

from __future__ import annotations

import time
from array import array
from typing import Any

from bench.context import Ctx, log
from bench.loadgen.fleet import Fleet
from bench.procstat import CpuMeter, per_thousand
from bench.stats import summary

Sends = list[list[tuple[int, Any]]]  # per agent: (local client index, conversation or room)


def run_step(
    ctx: Ctx,
    fleet: Fleet,
    step: int,
    rate: float,
    duration: float,
    sends: Sends,
    *,
    drain: float = 2.0,
    pad: int = 32,
    roots: dict[str, int] | None = None,
    label: str = "",
) -> dict[str, Any]:
    total_sends = sum(len(s) for s in sends) or 1
    meter = CpuMeter(roots if roots is not None else ctx.roots(fleet))
    calls_before = _redis_calls(ctx)
    meter.start()
    t0 = time.monotonic() + 0.3
    per_agent = [
        {"rate": rate * len(s) / total_sends, "sends": s, "phase": i / max(rate, 1e-9)}
        for i, s in enumerate(sends)
    ]
    replies = fleet.all("step", per_agent, step=step, t0=t0, duration=duration, drain=drain, pad=pad)
    cpu = meter.stop()
    calls_after = _redis_calls(ctx)
    calls = _delta(calls_before, calls_after) if calls_before and calls_after else {}
    errors = [r["error"] for r in replies if "error" in r]
    if errors:
        raise RuntimeError(f"load generator failed: {errors[0]}")
    ack_ms: array[float] = array("d")
    deliver_ms: array[float] = array("d")
    for reply in replies:
        ack_ms.frombytes(reply["ack_ms"])
        deliver_ms.frombytes(reply["deliver_ms"])
    sent = sum(r["sent"] for r in replies)
    acked = sum(r["acked"] for r in replies)
    delivered = sum(r["delivered"] for r in replies)
    last_acked: dict[Any, int] = {}
    for reply in replies:
        for key, seq in reply["last_acked"].items():
            last_acked[key] = max(seq, last_acked.get(key, 0))
    result: dict[str, Any] = {
        "step": step,
        "offered_rate": rate,
        "duration_s": duration,
        "sent": sent,
        "acked": acked,
        "errors": sum(r["errors"] for r in replies),
        "ack_rate": round(acked / duration, 1),
        "delivered": delivered,
        "deliveries_per_s": round(delivered / duration, 1),
        "ack_ms": summary(ack_ms),
        "deliver_ms": summary(deliver_ms),
        "send_lag_max_ms": max(r["send_lag_max_ms"] for r in replies),
        "cpu_s": cpu,
        "cpu_system_s": meter.system_s,
        "cpu_s_per_1000_deliveries": per_thousand(cpu, delivered),
        # every Redis command in the step (the two INFO calls that measure it excluded)
        "redis_calls": calls,
        "redis_calls_per_send": round(sum(calls.values()) / acked, 2) if acked and calls else None,
        "loadavg_before": meter.load_before,
        "loadavg_after": meter.load_after,
        "error_samples": [e for r in replies for e in r["error_samples"]][:3],
        "_last_acked": last_acked,
    }
    log(
        f"{label} step {step}: offered {rate:g}/s sent {sent} acked {acked} delivered {delivered}"
        f" ack p50/p99 {result['ack_ms']['p50']}/{result['ack_ms']['p99']} ms"
        f" deliver p50/p99 {result['deliver_ms']['p50']}/{result['deliver_ms']['p99']} ms"
        f" errors {result['errors']} load {meter.load_after.split()[0]}"
    )
    return result


def _redis_calls(ctx: Ctx) -> dict[str, int] | None:
    """The stack's Redis command counts, or None if there is no stack or Redis did not answer
    (a scenario may be restarting it): the step then records no counts."""
    if ctx.stack is None:
        return None
    try:
        return ctx.stack.redis_calls()
    except Exception as exc:
        log(f"counting Redis commands failed: {type(exc).__name__}: {exc}")
        return None


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    out = {name: n - before.get(name, 0) for name, n in after.items()}
    out["info"] = out.get("info", 0) - 1  # the INFO that took `before`
    return {name: n for name, n in sorted(out.items(), key=lambda kv: -kv[1]) if n > 0}


def settle(ctx: Ctx, roots: dict[str, int], limit_s: float = 90.0) -> float:
    """After an overload, wait until the servers are idle again (all of them under 15 % of a core for 1 s),
    so the next step does not inherit a backlog. Returns the seconds waited."""
    servers = dict(roots)  # load generators too: they may still be reading a backlog
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        meter = CpuMeter(servers)
        meter.start()
        time.sleep(1.0)
        if sum(meter.stop().values()) < 0.15:
            break
    waited = round(time.monotonic() - started, 1)
    if waited > 1.5:
        log(f"settled after {waited} s")
    return waited


def public(step: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in step.items() if not k.startswith("_")}
