"""Peer (e): a like-for-like durable server in Node.js (ws, pg, ioredis; issue 23).

`peers/durable_server.js` keeps chatd's promises on chatd's own schema: it runs against the bench
stack's PostgreSQL (migrated by chatd) and Redis, and the population is made through chatd's HTTP
API, so both servers store into the same tables and authenticate the same tokens. Two Node
processes behind an nginx like the other peers'; chatd's load generator drives it through
scenario 1 (durable 1:1) and scenario 2 (fan-out) unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bench.chatstack import BenchStack
from bench.context import Ctx, log
from bench.peers import install
from bench.peers.procs import Procs, wait_path
from bench.scenarios import durable, fanout

SERVER = Path(__file__).resolve().parent.parent / "peers" / "durable_server.js"
LABEL = "node-durable"


def start(stack: BenchStack, procs: Procs, workers: int) -> tuple[int, list[Path], Path]:
    """Install the peer, start `workers` Node processes and their nginx: (port, sockets, npm tree)."""
    log(f"{LABEL}: npm install {' '.join(install.NODE_DURABLE)} into bench/.peers/node-durable")
    tree = install.npm_tree("node-durable", install.NODE_DURABLE)
    node = shutil.which("node") or "node"
    socks = [procs.root / f"worker-{i + 1}.sock" for i in range(workers)]
    env = {
        "DATABASE_URL": stack.database_url,
        "REDIS_URL": stack.redis_url,
        "NODE_PATH": str(tree / "node_modules"),
        "PATH": "/usr/bin:/bin",
    }
    for i, sock in enumerate(socks):
        sock.unlink(missing_ok=True)
        procs.spawn(f"worker-{i + 1}", [node, str(SERVER), str(sock)], env=env, cwd=tree)
    for i, sock in enumerate(socks):
        try:
            wait_path(sock)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {procs.log_tail(f'worker-{i + 1}')}") from exc
    return procs.nginx([f"unix:{s}" for s in socks]), socks, tree


def run(ctx: Ctx) -> dict[str, Any]:
    assert ctx.stack is not None
    stack = ctx.stack
    procs = Procs(ctx.work / LABEL)
    try:
        port, _, tree = start(stack, procs, ctx.workers)
        url = f"ws://127.0.0.1:{port}/v1/ws"
        servers = dict(procs.pids)
        servers["postgres"] = stack.postmaster_pid()
        servers["redis"] = stack.pids["redis"]
        result: dict[str, Any] = {
            "durable": durable.run(ctx, url, servers, f"{LABEL} durable"),
            "fanout": fanout.run(ctx, url, servers, f"{LABEL} fanout"),
        }
        for name in procs.pids:
            if name.startswith("worker-") and not procs.alive(name):
                raise RuntimeError(f"{name} exited: {procs.log_tail(name)}")
        result["versions"] = install.npm_versions(tree, ("ws", "pg", "ioredis"))
        return result
    finally:
        procs.stop()
