"""The load-generator ceiling (issue 23): the same load generators against the cheapest possible
server, `peers/ceiling_server.js` (one Node `ws` process, no nginx, no storage, no Redis, a frame
parsed only as far as routing needs), in groups of 10 and of 100, once in each protocol the
generators speak: Socket.IO (what drives peers b and c) and chatd's (chatd and peer e; the sender
gets its own copy, as from chatd). Where this relay still keeps up, the generators do too; the
deliveries/s where it stops, and the generators' CPU there, are the most any server can show in
this harness on this box. A server's figure near it (bench/headline.py `generator_bound`) is the
generators' limit, not the server's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bench.baselines.relay import relay_ramp
from bench.context import Ctx, log
from bench.fanramp import FULL_LEVELS, QUICK_LEVELS
from bench.peers import install
from bench.peers.procs import Procs
from chatd.processes import free_port, wait_tcp

SERVER = Path(__file__).resolve().parent.parent / "peers" / "ceiling_server.js"
PACKAGES = ["ws@8.23.1"]  # the same `ws` as peer (e)'s
GROUP_SIZES = (10, 100)
# past the other ramps' top (100,000/s): the ceiling must be found, not assumed
EXTRA_LEVELS = [140000, 200000]


def run(ctx: Ctx) -> dict[str, Any]:
    log("loadgen-ceiling: npm install ws into bench/.peers/ceiling")
    tree = install.npm_tree("ceiling", PACKAGES)
    node = shutil.which("node") or "node"
    levels = [*QUICK_LEVELS, 8000] if ctx.quick else [*FULL_LEVELS, *EXTRA_LEVELS]
    result: dict[str, Any] = {"server": "bench/peers/ceiling_server.js, one process, no nginx"}
    for proto in ("sio", "chatd"):
        procs = Procs(ctx.work / f"loadgen-ceiling-{proto}")
        try:
            port = free_port()
            env = {"NODE_PATH": str(tree / "node_modules"), "PATH": "/usr/bin:/bin"}
            procs.spawn("relay", [node, str(SERVER), str(port)], env=env, cwd=tree)
            try:
                wait_tcp(port)
            except Exception as exc:
                raise RuntimeError(f"ceiling relay did not listen: {procs.log_tail('relay')}") from exc
            result[proto] = relay_ramp(
                ctx,
                f"loadgen-ceiling {proto}",
                f"ws://127.0.0.1:{port}",
                {"relay": procs.pids["relay"]},
                proto=proto,
                group_sizes=GROUP_SIZES,
                levels=levels,
            )
            if not procs.alive("relay"):
                raise RuntimeError(f"ceiling relay exited: {procs.log_tail('relay')}")
        finally:
            procs.stop()
    result["versions"] = install.npm_versions(tree, ("ws",))
    return result
