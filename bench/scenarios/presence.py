"""Scenario 5: read marks and presence churn, at fixed offered rates.

Groups of M members are connected (members spread over load generators, and by nginx over the
workers); each group's first member (the sender) has one device per load generator. The
sender sends a few messages into each group, then:

(a) Read marks: the other members send `read` frames at a fixed offered rate (a ramp of
    steps), round-robin over groups and members, each mark moving its member's pointer one seq
    on. Measured: send -> `read_state` reply at the marking socket, and send -> the first
    coalesced `receipts` event at the sender's device in the same load generator that counts
    this mark (the server pushes a group's counts at most once per
    CHATD_RECEIPT_PUSH_INTERVAL_MS, so that latency includes up to one interval by design).
(b) Presence churn: users who are members of those groups (one group each) connect at a fixed
    rate, go idle half-way and close cleanly after `hold` s, each user once; the group members
    watch. Measured: scheduled connect -> observer sees `online`, idle -> `away`, close ->
    `offline` (bounded below by CHATD_PRESENCE_GRACE_S, and up to one CHATD_PRESENCE_SWEEP_S
    later), and connect -> `synced` at the churning client.

CPU per process tree is reported per 1,000 marks and per 1,000 churn cycles (connect, idle,
close: three presence changes each).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from array import array
from dataclasses import dataclass
from typing import Any

from bench import chatstack
from bench.context import Ctx, Placement, log
from bench.loadgen.fleet import Fleet
from bench.loadgen.staterec import STATUSES
from bench.population import Api, User
from bench.procstat import CpuMeter, per_thousand
from bench.stats import summary
from bench.steps import Sends, public, run_step, settle
from chatd.config import documented_defaults

SETTINGS = (
    "CHATD_RECEIPT_PUSH_INTERVAL_MS",
    "CHATD_RECEIPT_FLUSH_INTERVAL_S",
    "CHATD_PRESENCE_GRACE_S",
    "CHATD_PRESENCE_SWEEP_S",
    "CHATD_PRESENCE_TTL_S",
    "CHATD_PRESENCE_HEARTBEAT_S",
)


@dataclass(frozen=True)
class Shape:
    groups: int
    members: int
    mark_rates: list[float]
    churn_rates: list[float]
    step_s: float
    hold_s: float


QUICK = Shape(groups=4, members=20, mark_rates=[100, 200], churn_rates=[20], step_s=1.0, hold_s=1.0)
FULL = Shape(
    groups=10,
    members=50,
    mark_rates=[100, 200, 400, 800, 1600, 3200],
    churn_rates=[10, 25, 50, 100, 200],
    step_s=4.0,
    hold_s=2.0,
)
MAX_ACK_P99_MS = 500.0
MAX_ONLINE_P99_MS = 2000.0


def settings() -> dict[str, float]:
    """The stack's receipt and presence settings (chatd's defaults unless the bench or the
    environment overrides them)."""
    defaults = documented_defaults()
    return {k: float(chatstack.BENCH_ENV.get(k) or os.environ.get(k) or defaults[k] or 0) for k in SETTINGS}


async def _population(
    url: str, groups: int, members: int, churners: int, settle_s: float
) -> tuple[list[list[User]], list[int], list[tuple[User, int]]]:
    async with Api(url) as api:
        users = await api.users(groups * members + churners)
        rows = [users[g * members : (g + 1) * members] for g in range(groups)]
        pool = users[groups * members :]
        extra = [[u for k, u in enumerate(pool) if k % groups == g] for g in range(groups)]
        cids = await asyncio.gather(*(api.group(rows[g][0], rows[g] + extra[g], "s5") for g in range(groups)))
        # Churners take part (one message each), or the members would never see their presence;
        # then wait until those short sessions have gone offline again. The markers take part
        # without a message (their reads count only then, §4.8), leaving the seqs to the sender.
        await asyncio.gather(*(api.speak(u, cids[k % groups]) for k, u in enumerate(pool)))
        markers = [(u, cids[g], rows[g][0]) for g in range(groups) for u in rows[g][1:]]
        await asyncio.gather(*(api.take_part(*marker) for marker in markers))
        await asyncio.sleep(settle_s)
        return rows, list(cids), [(u, k % groups) for k, u in enumerate(pool)]


def _merged(replies: list[dict[str, Any]], key: str, status: str | None = None) -> array[float]:
    out: array[float] = array("d")
    for reply in replies:
        out.frombytes(reply[key][status] if status else reply[key])
    return out


def _measure(
    ctx: Ctx, fleet: Fleet, op: str, per_agent: list[dict[str, Any]], **args: Any
) -> tuple[list[dict[str, Any]], CpuMeter, dict[str, float]]:
    meter = CpuMeter(ctx.roots(fleet))
    meter.start()
    replies = fleet.all(op, per_agent, **args)
    cpu = meter.stop()
    errors = [r["error"] for r in replies if "error" in r]
    if errors:
        raise RuntimeError(f"load generator failed: {errors[0]}")
    return replies, meter, cpu


def _common(
    replies: list[dict[str, Any]], meter: CpuMeter, cpu: dict[str, float], ops: int
) -> dict[str, Any]:
    return {
        "errors": sum(r["errors"] for r in replies),
        "error_samples": [e for r in replies for e in r["error_samples"]][:3],
        "send_lag_max_ms": max(r["send_lag_max_ms"] for r in replies),
        "cpu_s": cpu,
        "cpu_system_s": meter.system_s,
        "cpu_s_per_1000_ops": per_thousand(cpu, ops),
        "loadavg_before": meter.load_before,
        "loadavg_after": meter.load_after,
    }


class Plan:
    """Where every member's socket is, and how far each group's round-robin marks have got."""

    def __init__(self, agents: int, groups: int, markers: int) -> None:
        self.agents = agents
        self.markers = markers
        self.where: list[list[tuple[int, int]]] = [[] for _ in range(groups)]
        self.done = [0] * groups

    def marks(self, cids: list[int], rate: float, duration: float, t0: float) -> list[list[list[Any]]]:
        """Mark i at t0 + i/rate, into group i mod G: member k mod markers marks seq k // markers + 1,
        and is the (k mod markers + 1)-th reader of that seq."""
        per_agent: list[list[list[Any]]] = [[] for _ in range(self.agents)]
        for i in range(int(rate * duration)):
            g = i % len(cids)
            k = self.done[g]
            self.done[g] += 1
            agent, local = self.where[g][k % self.markers]
            per_agent[agent].append(
                [t0 + i / rate, local, cids[g], k // self.markers + 1, k % self.markers + 1]
            )
        return per_agent


def _read_step(
    ctx: Ctx,
    fleet: Fleet,
    plan: Plan,
    cids: list[int],
    step: int,
    rate: float,
    cfg: Shape,
    drain: float,
) -> dict[str, Any]:
    t0 = time.monotonic() + 0.5
    marks = plan.marks(cids, rate, cfg.step_s, t0)
    until = t0 + cfg.step_s + drain
    per_agent = [{"marks": m} for m in marks]
    replies, meter, cpu = _measure(ctx, fleet, "marks", per_agent, step=step, until=until)
    sent = sum(r["marks"] for r in replies)
    acks = sum(r["read_acks"] for r in replies)
    result = {
        "step": step,
        "offered_rate": rate,
        "duration_s": cfg.step_s,
        "marks": sent,
        "read_acks": acks,
        "ack_rate": round(acks / cfg.step_s, 1),
        "read_ack_ms": summary(_merged(replies, "read_ack_ms")),
        "receipt_ms": summary(_merged(replies, "receipt_ms")),
        "receipts_missing": sum(r["missing"]["receipts"] for r in replies),
        "receipt_events": sum(r["receipt_events"] for r in replies),
        **_common(replies, meter, cpu, sent),
    }
    a, rc = result["read_ack_ms"], result["receipt_ms"]
    log(
        f"presence read step {step}: offered {rate:g}/s marks {sent} acked {acks}"
        f" read_state p50/p99 {a['p50']}/{a['p99']} ms receipt p50/p99 {rc['p50']}/{rc['p99']} ms"
        f" (missing {result['receipts_missing']}) errors {result['errors']}"
        f" load {meter.load_after.split()[0]}"
    )
    return result


def _churn_step(
    ctx: Ctx,
    fleet: Fleet,
    pool: list[tuple[User, int]],
    observers: list[int],
    step: int,
    rate: float,
    cfg: Shape,
    tail: float,
) -> dict[str, Any]:
    hold = cfg.hold_s
    t0 = time.monotonic() + 0.5
    count = int(rate * cfg.step_s)
    batch, pool[:] = pool[:count], pool[count:]
    per_agent: list[dict[str, Any]] = [{"churners": []} for _ in range(len(fleet))]
    expect: dict[int, list[float]] = {}
    for i, (user, _group) in enumerate(batch):
        t_on = t0 + i / rate
        times = [t_on, t_on + hold / 2, t_on + hold]
        expect[user.id] = times
        per_agent[i % len(fleet)]["churners"].append([user.token, *times])
    until = t0 + cfg.step_s + hold + tail
    replies, meter, cpu = _measure(ctx, fleet, "churn", per_agent, step=step, expect=expect, until=until)
    expected = sum(observers[g] for _, g in batch)
    result: dict[str, Any] = {
        "step": step,
        "offered_rate": rate,
        "duration_s": cfg.step_s,
        "hold_s": hold,
        "churners": count,
        "connected": sum(r["connected"] for r in replies),
        "connect_failed": sum(r["connect_failed"] for r in replies),
        "connect_ms": summary(_merged(replies, "connect_ms")),
        "expected_events_per_status": expected,
    }
    for status in STATUSES:
        samples = _merged(replies, "presence_ms", status)
        result[f"{status}_ms"] = summary(samples)
    result.update(_common(replies, meter, cpu, count))
    on, off = result["online_ms"], result["offline_ms"]
    log(
        f"presence churn step {step}: {rate:g} connects/s, {result['connected']}/{count} connected;"
        f" online p50/p99 {on['p50']}/{on['p99']} ms ({on['n']}/{expected});"
        f" offline p50/p99 {off['p50']}/{off['p99']} ms ({off['n']}/{expected})"
        f" load {meter.load_after.split()[0]}"
    )
    return result


def _seeded(fleet: Fleet, cids: list[int], seeded: int, limit_s: float = 60.0) -> None:
    """Wait until every group's seed messages are acknowledged (late acks are slowness, not a
    broken harness: only a group still short after `limit_s` is an error)."""
    deadline = time.monotonic() + limit_s
    while True:
        acked: dict[int, int] = {}
        for status in fleet.all("status"):
            for cid, seq in status["last_acked"].items():
                acked[cid] = max(seq, acked.get(cid, 0))
        lowest = min(acked.get(cid, 0) for cid in cids)
        if lowest >= seeded:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"seeding left a group with {lowest} messages acknowledged, {seeded} needed")
        time.sleep(0.5)


def run(ctx: Ctx) -> dict[str, Any]:
    assert ctx.stack is not None
    cfg = QUICK if ctx.quick else FULL
    conf = settings()
    groups, members = cfg.groups, cfg.members
    markers = members - 1
    agents = ctx.agents
    churners = sum(int(r * cfg.step_s) for r in cfg.churn_rates)
    settle_s = conf["CHATD_PRESENCE_GRACE_S"] + 2 * conf["CHATD_PRESENCE_SWEEP_S"] + 1
    rows, cids, pool = asyncio.run(_population(ctx.stack.url, groups, members, churners, settle_s))
    marks_per_group = sum(math.ceil(r * cfg.step_s / groups) for r in cfg.mark_rates)
    seeded = math.ceil(marks_per_group / markers) + 1
    fleet = ctx.fleet(agents)
    try:
        place = Placement(len(fleet))
        plan = Plan(len(fleet), groups, markers)
        seed: Sends = [[] for _ in range(len(fleet))]
        n = 0
        for g, row in enumerate(rows):
            for a in range(len(fleet)):  # the sender: one device per load generator
                _, local = place.add(
                    {"token": row[0].token, "tag": "sender", "watch": ["receipts", "presence"]}, a
                )
                if a == g % len(fleet):
                    seed[a].append((local, cids[g]))
            for user in row[1:]:
                plan.where[g].append(
                    place.add({"token": user.token, "tag": "member", "watch": ["presence"]}, n)
                )
                n += 1
        connected = place.connect(fleet, ctx.ws_url, ctx)
        log(f"presence: {connected['connected']} sockets connected ({connected['failed']} failed)")
        if connected["failed"]:
            raise RuntimeError(f"observers failed to connect: {connected['errors'][:2]}")
        seed_s = 1.0 if ctx.quick else 2.0
        filled = run_step(
            ctx,
            fleet,
            1,
            (seeded + 1) * groups / seed_s,
            seed_s,
            seed,
            drain=0.5 if ctx.quick else 1.0,
            label="presence seed",
        )
        _seeded(fleet, cids, seeded)
        drain = conf["CHATD_RECEIPT_PUSH_INTERVAL_MS"] / 1000 + (0.7 if ctx.quick else 1.5)
        reads: list[dict[str, Any]] = []
        for k, rate in enumerate(cfg.mark_rates):
            reads.append(_read_step(ctx, fleet, plan, cids, 10 + k, rate, cfg, drain))
            last = reads[-1]
            if last["read_acks"] < 0.95 * last["marks"] or (last["read_ack_ms"]["p99"] or 0) > MAX_ACK_P99_MS:
                settle(ctx, ctx.roots(fleet))
                break
        observers = [markers + len(fleet)] * groups
        tail = conf["CHATD_PRESENCE_GRACE_S"] + conf["CHATD_PRESENCE_SWEEP_S"] + (1.0 if ctx.quick else 2.0)
        churn: list[dict[str, Any]] = []
        for k, rate in enumerate(cfg.churn_rates):
            churn.append(_churn_step(ctx, fleet, pool, observers, 100 + k, rate, cfg, tail))
            last = churn[-1]
            if (
                last["connected"] < 0.95 * last["churners"]
                or (last["online_ms"]["p99"] or 0) > MAX_ONLINE_P99_MS
            ):
                settle(ctx, ctx.roots(fleet))
                break
    finally:
        fleet.close()
    return {
        "groups": groups,
        "members": members,
        "sender_devices": len(fleet),
        "messages_per_group": seeded,
        "settings": conf,
        "connect": connected,
        "seed": public(filled),
        "reads": reads,
        "churn": churn,
    }
