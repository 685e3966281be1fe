"""Peer (c): the Node.js Socket.IO server with @socket.io/redis-adapter (no storage)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bench.baselines.relay import run_relay
from bench.context import Ctx, log
from bench.peers import install
from bench.peers.procs import Procs

SERVER = Path(__file__).resolve().parent.parent / "peers" / "sio_server.js"


def run(ctx: Ctx) -> dict[str, Any]:
    assert ctx.stack is not None
    log("sio-node: npm install socket.io and the redis adapter into bench/.peers/node")
    tree = install.npm_tree("node", install.NODE_RELAY)
    node = shutil.which("node") or "node"
    stack = ctx.stack

    def start(procs: Procs, socks: list[Path]) -> None:
        env = {"REDIS_URL": stack.redis_url, "NODE_PATH": str(tree / "node_modules"), "PATH": "/usr/bin:/bin"}
        for i, sock in enumerate(socks):
            procs.spawn(f"worker-{i + 1}", [node, str(SERVER), str(sock)], env=env, cwd=tree)

    result = run_relay(ctx, "sio-node", start)
    result["versions"] = install.npm_versions(tree)
    return result
