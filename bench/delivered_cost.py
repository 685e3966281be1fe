"""What delivery confirmations cost: fan-out at a fixed rate, members confirming or not.

`python -m bench.delivered_cost [--members 1000] [--sizes 100,10] [--rate 2000] [--rounds 2]`

One stack, one population, one set of connected members; for each group size the same fixed
rate (deliveries/s) runs with confirmations off (`received_ms` 0) and on (every 100 ms, as the
web app does, docs/protocol.md §4.8), alternating, `--rounds` times each, so both see the same
box. Members take part in their groups (`--silent`: they do not), so their confirmations count
in `delivered_to` and are pushed to the senders. Prints CPU per 1,000 deliveries of the workers,
the load generators, Redis and Postgres, and the `received` frames sent; writes
bench/results/delivered-cost.json (git-ignored unless named).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import chatstack
from bench.context import Ctx, Placement, log
from bench.population import Api, User
from bench.steps import Sends, run_step

RESULTS = Path(__file__).resolve().parent / "results"


async def _population(
    url: str, count: int, sizes: list[int], take_part: bool
) -> tuple[list[User], dict[int, list[tuple[list[int], int]]]]:
    rng = random.Random(21)
    async with Api(url) as api:
        users = await api.users(count)
        groups: dict[int, list[tuple[list[int], int]]] = {}
        for size in sizes:
            order = list(range(count))
            rng.shuffle(order)
            parts = [order[k : k + size] for k in range(0, count - size + 1, size)]
            cids = await asyncio.gather(*(api.group(users[p[0]], [users[i] for i in p]) for p in parts))
            groups[size] = list(zip(parts, cids, strict=True))
            if take_part:  # naming a member already there is taking part (§4.9)
                await asyncio.gather(
                    *(api.take_part(users[i], cid, users[p[0]]) for p, cid in groups[size] for i in p[1:])
                )
        return users, groups


def _row(step: dict[str, Any], confirmed: int) -> dict[str, Any]:
    cpu: dict[str, float] = step["cpu_s"]
    delivered: int = max(step["delivered"], 1)

    def per_k(names: list[str]) -> float:
        return round(sum(cpu.get(n, 0.0) for n in names) * 1000 / delivered, 4)

    workers = [n for n in cpu if n.startswith("worker-")]
    loadgens = [n for n in cpu if n.startswith("loadgen-")]
    return {
        "delivered": step["delivered"],
        "deliveries_per_s": step["deliveries_per_s"],
        "received_frames": confirmed,
        "deliver_p99_ms": step["deliver_ms"]["p99"],
        "cpu_s_per_1000": {
            "workers": per_k(workers),
            "loadgen": per_k(loadgens),
            "redis": per_k(["redis"]),
            "postgres": per_k(["postgres"]),
            "nginx": per_k(["nginx"]),
        },
        "loadavg": step["loadavg_after"].split()[0],
    }


def _spy(ctx: Ctx, name: str, seconds: float) -> list[subprocess.Popen[bytes]]:
    """py-spy on every worker for one step: bench/results/raw/<name>-<worker>.txt."""
    assert ctx.stack is not None
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    (RESULTS / "raw").mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                pyspy,
                "record",
                "-p",
                str(pid),
                "-d",
                str(int(seconds)),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(RESULTS / "raw" / f"{name}-{n}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n, pid in enumerate(ctx.stack.worker_pids())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--sizes", default="100,10")
    parser.add_argument("--rate", type=float, default=2000, help="deliveries per second")
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--received-ms", type=float, default=100)
    parser.add_argument("--silent", action="store_true", help="members never take part")
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--name", default="delivered-cost")
    parser.add_argument("--profile", action="store_true", help="py-spy the workers in the first round")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="chatd-dcost-"))
    work.chmod(0o755)
    ctx = Ctx(quick=False, workers=2, agents=args.agents, work=work)
    results: dict[str, Any] = {"args": vars(args), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        ctx.stack = chatstack.start(work / "stack", 2)
        users, groups = asyncio.run(_population(ctx.stack.url, args.members, sizes, not args.silent))
        fleet = ctx.fleet()
        try:
            place = Placement(len(fleet))
            where = [place.add({"token": u.token, "tag": "member"}, n) for n, u in enumerate(users)]
            log(f"connected: {place.connect(fleet, ctx.ws_url, ctx)}")
            step_no = 0
            for size in sizes:
                sends: Sends = [[] for _ in range(len(fleet))]
                for part, cid in groups[size]:
                    agent, local = where[part[0]]
                    sends[agent].append((local, cid))
                rows: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
                for round_ in range(args.rounds):
                    for mode in ("off", "on"):
                        ms = args.received_ms if mode == "on" else 0
                        before = sum(r["confirmed"] for r in fleet.all("confirm", received_ms=ms))
                        step_no += 1
                        spies = (
                            _spy(ctx, f"{args.name}-G{size}-{mode}", args.duration + 2)
                            if args.profile and not round_
                            else []
                        )
                        step = run_step(
                            ctx, fleet, step_no, args.rate / (size - 1), args.duration, sends,
                            drain=2.0, label=f"G={size} received {mode}",
                        )  # fmt: skip
                        for spy in spies:
                            spy.wait(30)
                        after = sum(r["confirmed"] for r in fleet.all("confirm", received_ms=0))
                        rows[mode].append(_row(step, after - before))
                        time.sleep(1.0)  # the last confirmations land before the next step
                results[str(size)] = rows
                for mode in ("off", "on"):
                    for row in rows[mode]:
                        log(f"G={size} {mode}: {json.dumps(row)}")
        finally:
            fleet.close()
    finally:
        if ctx.stack is not None:
            ctx.stack.down()
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.name}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
