"""Scenario 4: reconnect storm. Messages flow into groups; every storm client is dropped at
once (TCP reset, no close handshake) and reconnects after a random delay (jitter) with its
`since` map. Measured: time from the drop until every client has caught up (its `synced`
frame, which follows the catch-up), and whether anything was missed or duplicated.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.context import Ctx, Placement, log
from bench.population import Api, User
from bench.procstat import CpuMeter
from bench.stats import summary
from bench.steps import Sends

DEVICES = 5
GROUP = 50


async def _population(url: str, count: int) -> tuple[list[User], list[int]]:
    async with Api(url) as api:
        users = await api.users(count)
        groups = [users[k : k + GROUP] for k in range(0, count, GROUP)]
        cids = await asyncio.gather(*(api.group(g[0], g, "storm") for g in groups))
        return users, list(cids)


def run(ctx: Ctx) -> dict[str, Any]:
    assert ctx.stack is not None
    clients = 500 if ctx.quick else 5000
    rate, jitter = 20.0, (1.0 if ctx.quick else 5.0)
    warm, flow_after = (1.0, 3.0) if ctx.quick else (5.0, 20.0)
    users, cids = asyncio.run(_population(ctx.stack.url, clients // DEVICES))
    fleet = ctx.fleet(max(ctx.agents, 2))
    try:
        place = Placement(len(fleet))
        for n in range(clients):
            place.add({"token": users[n % len(users)].token, "tag": "storm"}, n)
        sends: Sends = [[] for _ in range(len(fleet))]
        for k, cid in enumerate(cids):  # one more device per group owner sends; it is not dropped
            agent, local = place.add({"token": users[k * GROUP].token, "tag": "sender"}, k)
            sends[agent].append((local, cid))
        connected = place.connect(fleet, ctx.ws_url, ctx)
        log(f"storm: {connected['connected']} connected ({connected['failed']} failed)")
        meter = CpuMeter(ctx.roots(fleet))
        meter.start()
        duration = warm + jitter + flow_after
        t0 = time.monotonic() + 0.3
        total = sum(len(s) for s in sends)
        reqs = [
            fleet.send(
                i,
                "step",
                step=1,
                t0=t0,
                duration=duration,
                drain=3.0,
                pad=32,
                rate=rate * len(s) / total,
                sends=s,
                phase=i / rate,
            )
            for i, s in enumerate(sends)
        ]
        time.sleep(max(0.0, t0 + warm - time.monotonic()))
        dropped = fleet.all("drop", tag="storm")
        t_drop = min(d["at"] for d in dropped)
        log(
            f"storm: dropped {sum(d['dropped'] for d in dropped)} clients;"
            f" reconnecting with {jitter} s jitter"
        )
        back = fleet.all("reconnect", tag="storm", jitter=jitter, timeout=120.0)
        synced = [t - t_drop for b in back for t in b.get("synced_at", [])]
        flow = [fleet.wait(i, r) for i, r in enumerate(reqs)]
        cpu = meter.stop()
        final: dict[str, int] = {}
        for reply in flow:
            for cid, seq in reply.get("last_acked", {}).items():
                final[str(cid)] = max(seq, final.get(str(cid), 0))
        verified = fleet.all("verify", tag="storm", final=final)
    finally:
        fleet.close()
    missing = sum(v["missing"] + v["tail_missing"] for v in verified)
    duplicates = sum(v["duplicates"] for v in verified)
    reconnected = sum(b.get("reconnected", 0) for b in back)
    result = {
        "clients": clients,
        "users": len(users),
        "groups": len(cids),
        "rate_msgs_per_s": rate,
        "jitter_s": jitter,
        "connect": connected,
        "dropped": sum(d["dropped"] for d in dropped),
        "reconnected": reconnected,
        "reconnect_failed": sum(b.get("failed", 0) for b in back),
        "attempts": sum(b.get("attempts", 0) for b in back),
        "errors": [e for b in back for e in b.get("errors", [])][:5],
        "all_caught_up_s": round(max(synced), 2) if synced else None,
        "caught_up_after_drop_s": summary([s * 1000 for s in synced]),
        "messages_sent": sum(f.get("sent", 0) for f in flow),
        "messages_acked": sum(f.get("acked", 0) for f in flow),
        "missing": missing,
        "duplicates": duplicates,
        "cpu_s": cpu,
        "loadavg_before": meter.load_before,
        "loadavg_after": meter.load_after,
    }
    log(
        f"storm: {reconnected}/{result['dropped']} caught up, last after {result['all_caught_up_s']} s;"
        f" missing {missing}, duplicates {duplicates}"
    )
    return result
