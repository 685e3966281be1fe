"""Run a Socket.IO relay peer (b or c) through the same fan-out ramp as chatd's scenario 2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.context import Ctx, Placement, log
from bench.fanramp import ramp
from bench.peers.procs import Procs, wait_path
from bench.scenarios.fanout import members, partitions
from bench.steps import Sends

Starter = Callable[[Procs, list[Path]], None]


def run_relay(ctx: Ctx, label: str, start_workers: Starter) -> dict[str, Any]:
    assert ctx.stack is not None
    procs = Procs(ctx.work / label)
    socks = [procs.root / f"worker-{i + 1}.sock" for i in range(ctx.workers)]
    for sock in socks:
        sock.unlink(missing_ok=True)
    fleet = None
    try:
        start_workers(procs, socks)
        for sock in socks:
            wait_path(sock)
        port = procs.nginx([f"unix:{s}" for s in socks])
        count = members(ctx)
        parts = partitions(count)
        rooms: list[list[str]] = [[] for _ in range(count)]
        for group, groups in parts.items():
            for k, member_ids in enumerate(groups):
                for m in member_ids:
                    rooms[m].append(f"g{group}-{k}")
        fleet = ctx.fleet()
        place = Placement(len(fleet))
        where = [place.add({"rooms": r, "tag": "member"}, n) for n, r in enumerate(rooms)]
        connected = place.connect(fleet, f"ws://127.0.0.1:{port}", ctx, proto="sio")
        log(f"{label}: {connected['connected']} members connected ({connected['failed']} failed)")
        if connected["connected"] < count:
            raise RuntimeError(f"only {connected['connected']} of {count} connected: {connected['errors']}")
        sends_by_size: dict[int, Sends] = {}
        for group, groups in parts.items():
            sends: Sends = [[] for _ in range(len(fleet))]
            for k, member_ids in enumerate(groups):
                agent, local = where[member_ids[0]]
                sends[agent].append((local, f"g{group}-{k}"))
            sends_by_size[group] = sends
        roots = {name: pid for name, pid in procs.pids.items()}
        roots["redis"] = ctx.stack.pids["redis"]
        roots.update(fleet.pids)
        by_size = ramp(ctx, fleet, sends_by_size, label, roots=roots)
        return {"members": count, "connect": connected, "by_group_size": by_size}
    finally:
        if fleet is not None:
            fleet.close()
        procs.stop()
