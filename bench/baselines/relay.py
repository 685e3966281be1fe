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
    try:
        start_workers(procs, socks)
        for sock in socks:
            wait_path(sock)
        port = procs.nginx([f"unix:{s}" for s in socks])
        roots = {name: pid for name, pid in procs.pids.items()}
        roots["redis"] = ctx.stack.pids["redis"]
        return relay_ramp(ctx, label, f"ws://127.0.0.1:{port}", roots)
    finally:
        procs.stop()


def relay_ramp(
    ctx: Ctx,
    label: str,
    url: str,
    servers: dict[str, int],
    proto: str = "sio",
    group_sizes: tuple[int, ...] | None = None,
    levels: list[int] | None = None,
) -> dict[str, Any]:
    """The fan-out ramp against a relay at `url` whose members join rooms: Socket.IO rooms, or
    (proto "chatd", the load-generator ceiling's relay) a token listing the member's
    conversations, "<user id>:<conversation id>,...". `servers` are the process trees to
    account CPU to besides the load generators."""
    count = members(ctx)
    parts = {g: groups for g, groups in partitions(count).items() if group_sizes is None or g in group_sizes}

    def room(group: int, k: int) -> str:
        return f"g{group}-{k}" if proto == "sio" else str(group * 100000 + k + 1)

    rooms: list[list[str]] = [[] for _ in range(count)]
    for group, groups in parts.items():
        for k, member_ids in enumerate(groups):
            for m in member_ids:
                rooms[m].append(room(group, k))
    fleet = ctx.fleet()
    try:
        place = Placement(len(fleet))
        where = [
            place.add(
                {"rooms": r, "tag": "member"}
                if proto == "sio"
                else {"token": f"{n + 1}:{','.join(r)}", "tag": "member"},
                n,
            )
            for n, r in enumerate(rooms)
        ]
        connected = place.connect(fleet, url if proto == "sio" else f"{url}/v1/ws", ctx, proto=proto)
        log(f"{label}: {connected['connected']} members connected ({connected['failed']} failed)")
        if connected["connected"] < count:
            raise RuntimeError(f"only {connected['connected']} of {count} connected: {connected['errors']}")
        sends_by_size: dict[int, Sends] = {}
        for group, groups in parts.items():
            sends: Sends = [[] for _ in range(len(fleet))]
            for k, member_ids in enumerate(groups):
                agent, local = where[member_ids[0]]
                target: Any = room(group, k) if proto == "sio" else int(room(group, k))
                sends[agent].append((local, target))
            sends_by_size[group] = sends
        roots = {**servers, **fleet.pids}
        by_size = ramp(ctx, fleet, sends_by_size, label, roots=roots, levels=levels)
        return {"members": count, "connect": connected, "by_group_size": by_size}
    finally:
        fleet.close()
