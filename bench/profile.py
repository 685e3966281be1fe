"""`python -m bench profile`: py-spy on every chatd worker under a steady mixed load
(1:1 durable sends plus fan-out in groups of 100), then where the workers' CPU goes.

Writes bench/results/profile.json and bench/results/profile.md (included in docs/benchmarks.md)
and the raw collapsed stacks under bench/results/raw/ (not committed).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import chatstack
from bench.context import Ctx, Placement, log
from bench.population import Api
from bench.procstat import CpuMeter, loadavg
from bench.steps import Sends

RESULTS = Path(__file__).resolve().parent / "results"
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")
AREAS = (
    ("event loop, C level (uvloop callbacks, socket I/O)", "runners.py"),
    ("syscalls/libc (socket write/read...)", "libc.so"),
    ("CPython runtime", "libpython"),
    ("uvloop/libuv", "uvloop"),
    ("chatd", "chatd/"),
    ("asyncpg", "asyncpg"),
    ("redis-py", "/redis/"),
    ("websockets", "websockets"),
    ("uvicorn", "uvicorn"),
    ("starlette", "starlette"),
    ("orjson/json", "json"),
    ("asyncio", "asyncio"),
    ("logging", "logging"),
)


def _key(frame: str) -> str:
    """`func (pkg/file.py:line)` -> `func (pkg/file.py)`: py-spy already shortens the path."""
    m = FRAME.match(frame)
    return f"{m['func']} ({m['file']})" if m else frame


def _idle(frames: list[str]) -> bool:
    """With --native py-spy counts blocked threads as busy: drop threads waiting on a lock
    (the default executor's idle threads) and the event loop waiting in epoll."""
    return "epoll_pwait" in frames[-1] or any("PyThread_acquire_lock_timed" in f for f in frames)


def _area(frame: str) -> str:
    for name, needle in AREAS:
        if needle in frame:
            return name
    return "other"


def summarise(raw_files: list[Path], top: int = 60) -> dict[str, Any]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    samples = 0
    for path in raw_files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [
                f
                for f in stack.split(";")
                if f and not f.startswith("process ") and not f.startswith("thread ")
            ]
            if not frames or _idle(frames):
                continue
            samples += count
            own[_key(frames[-1])] += count
            areas[_area(frames[-1])] += count
            for key in {_key(f) for f in frames}:
                total[key] += count

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": k, "pct": round(100 * v / max(samples, 1), 1)} for k, v in counter.most_common(top)
        ]

    return {"samples": samples, "self": table(own), "inclusive": table(total), "areas": table(areas)}


async def _population(url: str, pairs: int, group: int) -> tuple[list[Any], list[int], list[Any], int]:
    async with Api(url) as api:
        users = await api.users(max(2 * pairs, group))
        cids = await asyncio.gather(*(api.direct(users[2 * k], users[2 * k + 1]) for k in range(pairs)))
        gid = await api.group(users[0], users[:group], "profile")
        return users, list(cids), users[:group], gid


def cmd_profile(
    seconds: float, rate: float, group_rate: float, workers: int, agents: int, native: bool = False
) -> int:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        raise SystemExit("py-spy not found: pip install py-spy")
    work = Path(tempfile.mkdtemp(prefix="chatd-profile-"))
    work.chmod(0o755)
    raw_dir = RESULTS / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(quick=False, workers=workers, agents=agents, work=work)
    ctx.stack = chatstack.start(work / "stack", workers)
    fleet = None
    try:
        users, cids, _members, gid = asyncio.run(_population(ctx.stack.url, 100, 100))
        fleet = ctx.fleet()
        place = Placement(len(fleet))
        where = [place.add({"token": u.token, "tag": "u"}, n) for n, u in enumerate(users)]
        place.connect(fleet, ctx.ws_url, ctx)
        sends: Sends = [[] for _ in range(len(fleet))]
        for k, cid in enumerate(cids):
            agent, local = where[2 * k]
            sends[agent].append((local, cid))
        g_agent, g_local = where[0]
        group_sends: Sends = [[] for _ in range(len(fleet))]
        group_sends[g_agent].append((g_local, gid))
        meter = CpuMeter(ctx.roots(fleet))
        meter.start()
        t0 = time.monotonic() + 1.0
        reqs: list[tuple[int, int]] = []
        for i in range(len(fleet)):
            share = len(sends[i]) / max(1, sum(len(s) for s in sends))
            reqs.append(
                (
                    i,
                    fleet.send(
                        i,
                        "step",
                        step=1,
                        t0=t0,
                        duration=seconds + 2,
                        drain=2.0,
                        pad=32,
                        rate=rate * share,
                        sends=sends[i],
                        phase=i / rate,
                    ),
                )
            )
            if group_sends[i]:
                reqs.append(
                    (
                        i,
                        fleet.send(
                            i,
                            "step",
                            step=2,
                            t0=t0,
                            duration=seconds + 2,
                            drain=2.0,
                            pad=32,
                            rate=group_rate,
                            sends=group_sends[i],
                            phase=0.0,
                        ),
                    )
                )
        time.sleep(max(0.0, t0 + 1 - time.monotonic()))
        spies = []
        raws = []
        for n, pid in enumerate(ctx.stack.worker_pids()):
            out = raw_dir / f"worker-{n + 1}.txt"
            out.unlink(missing_ok=True)
            raws.append(out)
            spies.append(
                subprocess.Popen(
                    [
                        pyspy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(int(seconds)),
                        "--rate",
                        "100" if native else "200",
                        "--format",
                        "raw",
                        *(["--native"] if native else ["--nonblocking"]),
                        "--output",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=(raw_dir / f"py-spy-{n + 1}.log").open("wb"),
                )
            )
        for spy in spies:
            spy.wait(seconds + 60)
        replies = [fleet.wait(i, req) for i, req in reqs]
        cpu = meter.stop()
    finally:
        if fleet is not None:
            fleet.close()
        ctx.stack.down()
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise([p for p in raws if p.exists()])
    acked = sum(r.get("acked", 0) for r in replies)
    delivered = sum(r.get("delivered", 0) for r in replies)
    result = {
        "seconds": seconds,
        "py_spy": "100 Hz, --native (blocking: biased toward syscalls)"
        if native
        else "200 Hz, --nonblocking",
        "sends_per_s": rate,
        "group100_msgs_per_s": group_rate,
        "acked": acked,
        "delivered": delivered,
        "cpu_s": cpu,
        "cpu_system_s": meter.system_s,
        "loadavg": loadavg(),
        **summary,
    }
    (RESULTS / "profile.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "profile.md").write_text(markdown(result))
    log(f"wrote {RESULTS / 'profile.md'}")
    return 0


def markdown(r: dict[str, Any]) -> str:
    workers = [k for k in r["cpu_s"] if k.startswith("worker")]
    cpu = ", ".join(
        f"{k} {r['cpu_s'][k]} s ({r.get('cpu_system_s', {}).get(k, '?')} s in the kernel)" for k in workers
    )
    lines = [
        "## Where chatd's worker CPU goes (py-spy)",
        "",
        f"`python -m bench profile`: {r['seconds']} s of py-spy ({r.get('py_spy')}, idle excluded) on each"
        f" worker while {r['sends_per_s']} sends/s in 1:1 conversations and {r['group100_msgs_per_s']} msg/s"
        f" into a group of 100 flow ({r['acked']} acks, {r['delivered']} deliveries). Worker CPU: {cpu}."
        f" Load `{r['loadavg']}`. Shares of the workers' busy samples ({r['samples']}).",
        "",
        "Reading it: own time under `Runner.run` is time below Python, in the event loop's C code",
        "(uvloop callbacks and transports, asyncpg's Cython protocol, the socket system calls; the",
        "kernel share is given above). The Python that shows is asyncpg's execute path for the",
        "group-commit statement, chatd's frame writer (`FlowControlledProtocol.write_texts`: each",
        "event framed once and a connection's queued frames written with one transport write, below",
        "the per-message ASGI send path), and redis-py's pipelines (rate-limit counters, publishes;",
        "`StreamWriter.writelines` is their socket write).",
        "",
        "| area (own time) | % |",
        "|---|---|",
    ]
    lines += [f"| {a['function']} | {a['pct']} |" for a in r["areas"]]
    lines += ["", "| top functions, own time | % |", "|---|---|"]
    lines += [f"| `{a['function']}` | {a['pct']} |" for a in r["self"][:15]]
    lines += ["", "| chatd functions, inclusive (with what they call) | % |", "|---|---|"]
    roots = ("chatd/cli.py", "chatd/server.py", "chatd/__main__.py")
    chatd = [
        a
        for a in r["inclusive"]
        if "chatd/" in a["function"] and not a["function"].endswith(tuple(f"({root})" for root in roots))
    ]
    lines += [f"| `{a['function']}` | {a['pct']} |" for a in chatd[:20]]
    return "\n".join(lines) + "\n"
