"""`python -m bench run [--quick] [--only a,b] ...` and `python -m bench report RESULTS.json`."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import signal
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import chatstack, headline
from bench.context import Ctx, log
from bench.loadgen import wire
from bench.procstat import loadavg

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs" / "benchmarks.md"
SCALING_DOC = HERE.parent / "docs" / "scaling.md"

# name -> (module under bench/, whether it measures the chatd stack)
SCENARIOS: dict[str, tuple[str, bool]] = {
    "db-ceiling": ("baselines.dbceiling", True),
    "loadgen-ceiling": ("baselines.loadgen_ceiling", False),
    "durable": ("scenarios.durable", True),
    "fanout": ("scenarios.fanout", True),
    "sio-python": ("baselines.sio_python", True),
    "sio-node": ("baselines.sio_node", True),
    "node-durable": ("baselines.node_durable", True),
    "synapse": ("baselines.synapse", True),
    "idle": ("scenarios.idle", True),
    "storm": ("scenarios.storm", True),
    "presence": ("scenarios.presence", True),
}


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_at_start": loadavg(),
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_run(args: argparse.Namespace) -> int:
    # stop cleanly (stack and peers down) on SIGTERM, and on SIGINT even when started in the background
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    names = list(SCENARIOS) if not args.only else args.only.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    name = args.name or ("quick" if args.quick else "full")
    work = Path(tempfile.mkdtemp(prefix="chatd-bench-"))
    work.chmod(0o755)  # postgres and nginx users must traverse it
    ctx = Ctx(quick=args.quick, workers=args.workers, agents=args.agents, work=work, deflate=args.deflate)
    results: dict[str, Any] = {
        "name": name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "quick" if args.quick else "full",
        "machine": _machine(),
        "config": {
            "workers": args.workers,
            "load_generators": args.agents,
            "load_generator_client": wire.client(args.deflate),
            "deflate": args.deflate,
            "chatd_env": chatstack.BENCH_ENV,
            # every difference from production's defaults, with its reason (the Method section)
            "deviations": chatstack.deviations(),
            "metrics_off_workers": args.metrics_off,
            "repeat": args.repeat,
        },
        # run 1's scenarios; runs 2..N (`--repeat`) in "repeats", each the same shape
        "scenarios": {},
        "repeats": [],
    }
    started = time.monotonic()
    try:
        if any(SCENARIOS[n][1] for n in names):
            log(f"starting chatd stack ({args.workers} workers) in {work}")
            off = {n - 1: {"CHATD_METRICS": "off"} for n in args.metrics_off}
            ctx.stack = chatstack.start(
                work / "stack", args.workers, worker_env=off, redis_cluster=args.redis_cluster
            )
            if args.redis_cluster:
                half = chatstack.CLUSTER_NODES // 2
                results["config"]["redis_cluster"] = {"primaries": half, "replicas": half}
        every: list[dict[str, Any]] = []
        for rep in range(args.repeat):
            every.append({})
            results["scenarios"], results["repeats"] = every[0], every[1:]
            for scenario in names:
                module = importlib.import_module(f"bench.{SCENARIOS[scenario][0]}")
                log(f"== {scenario}" + (f" (run {rep + 1} of {args.repeat})" if args.repeat > 1 else ""))
                t = time.monotonic()
                try:
                    outcome = module.run(ctx)
                except Exception as exc:
                    traceback.print_exc()
                    outcome = {"error": f"{type(exc).__name__}: {exc}"}
                outcome["wall_s"] = round(time.monotonic() - t, 1)
                every[rep][scenario] = outcome
    finally:
        if ctx.stack is not None:
            ctx.stack.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["wall_s"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_at_end"] = loadavg()
    from bench import report

    if args.merge:
        results = _merge(RESULTS / f"{args.merge}.json", results)
        name = args.merge
    results["headlines"] = headline.medians(results)
    results["targets"] = report.targets(results)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    log(f"wrote {out} ({results['wall_s']} s)")
    if args.docs:
        report.write_docs(results, DOCS)
        log(f"wrote {DOCS}")
    return check(results) if args.check else 0


def check(results: dict[str, Any]) -> int:
    """For CI: 1 if the harness broke (a scenario, or a peer it installs, raised and recorded an
    `error`), else 0. Timing never fails the check."""
    broken = {
        name + (f" (run {n + 1})" if n else ""): out["error"]
        for n, scenarios in enumerate(headline.runs(results))
        for name, out in scenarios.items()
        if "error" in out
    }
    for name, error in broken.items():
        log(f"check: {name} failed: {error}")
    if not broken:
        log(f"check: {len(results['scenarios'])} scenarios ran without a harness error")
    return 1 if broken else 0


def _merge(path: Path, rerun: dict[str, Any]) -> dict[str, Any]:
    """Replace some scenarios of an earlier results file with a re-run's (recorded as such: each
    target's ratio still compares numbers taken in one run, see targets.py)."""
    base: dict[str, Any] = json.loads(path.read_text())
    base["scenarios"].update(rerun["scenarios"])
    repeats = base.setdefault("repeats", [])
    for n, scenarios in enumerate(rerun.get("repeats", [])):
        if n >= len(repeats):
            repeats.append({})
        repeats[n].update(scenarios)
    base.setdefault("reruns", []).append(
        {
            "scenarios": list(rerun["scenarios"]),
            "started": rerun["started"],
            "wall_s": rerun["wall_s"],
            "loadavg_at_start": rerun["machine"]["loadavg_at_start"],
            "loadavg_at_end": rerun["machine"]["loadavg_at_end"],
        }
    )
    return base


def cmd_report(args: argparse.Namespace) -> int:
    from bench import report

    results = json.loads(Path(args.results).read_text())
    results["headlines"] = headline.medians(results)
    results["targets"] = report.targets(results)
    report.write_docs(results, DOCS)
    log(f"wrote {DOCS}")
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    from bench import scaling

    if args.cluster:
        single, cluster = (json.loads(Path(f).read_text()) for f in args.cluster)
        scaling.write_cluster(single, cluster, SCALING_DOC)
    else:
        scaling.write(json.loads(Path(args.results).read_text()), SCALING_DOC)
    log(f"wrote {SCALING_DOC}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from bench.profile import cmd_profile as run_profile

    return run_profile(args.seconds, args.rate, args.group_rate, args.workers, args.agents, args.native)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the stack, run scenarios, write bench/results/<name>.json")
    run.add_argument("--quick", action="store_true", help="small and short (about 2 minutes): CI smoke")
    run.add_argument("--only", help=f"comma-separated: {','.join(SCENARIOS)}")
    run.add_argument("--workers", type=int, default=2, help="chatd (and peer) worker processes")
    run.add_argument("--agents", type=int, default=2, help="load-generator processes")
    run.add_argument("--name", help="results file name (default: quick or full)")
    run.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the selected scenarios N times (use 3 for docs/benchmarks.md): headlines are the medians",
    )
    run.add_argument("--deflate", action="store_true", help="clients negotiate permessage-deflate")
    run.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write docs/benchmarks.md (default: on for full runs, off for --quick)",
    )
    run.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if any scenario recorded an error (CI; timing is not checked)",
    )
    run.add_argument("--keep", action="store_true", help="keep the temporary stack directory")
    run.add_argument(
        "--metrics-off",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="run worker N (1-based) with CHATD_METRICS=off: compare its CPU (worker-N) with the others'",
    )
    run.add_argument("--merge", metavar="NAME", help="put these scenarios' results into results/NAME.json")
    run.add_argument(
        "--redis-cluster",
        action="store_true",
        help="chatd on a local Redis Cluster (3 primaries, 3 replicas), not one Redis (docs/scaling.md)",
    )
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="rewrite docs/benchmarks.md from a results file")
    rep.add_argument("results", nargs="?", default=str(RESULTS / "full.json"))
    rep.set_defaults(func=cmd_report)
    scale = sub.add_parser("scaling", help="rewrite docs/scaling.md's measured block from a results file")
    scale.add_argument("results", nargs="?", default=str(RESULTS / "full.json"))
    scale.add_argument(
        "--cluster",
        nargs=2,
        metavar=("ONE_REDIS.json", "CLUSTER.json"),
        help="instead: rewrite the Redis Cluster comparison from a run on one Redis and one on a cluster",
    )
    scale.set_defaults(func=cmd_scaling)
    prof = sub.add_parser("profile", help="py-spy every chatd worker under a steady mixed load")
    prof.add_argument("--seconds", type=float, default=20)
    prof.add_argument("--rate", type=float, default=400, help="1:1 sends/s")
    prof.add_argument("--group-rate", type=float, default=20, help="msgs/s into a group of 100")
    prof.add_argument("--workers", type=int, default=2)
    prof.add_argument("--agents", type=int, default=2)
    prof.add_argument("--native", action="store_true", help="py-spy --native (blocking sampler)")
    prof.set_defaults(func=cmd_profile)
    args = parser.parse_args(argv)
    if args.command == "run" and args.docs is None:
        args.docs = not args.quick and (not args.only or bool(args.merge))
    result: int = args.func(args)
    return result
