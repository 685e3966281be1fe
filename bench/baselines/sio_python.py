"""Peer (b): a pure relay, python-socketio with AsyncRedisManager under uvicorn (no storage).

Served like chatd (src/chatd/server.py): the same uvicorn and websockets versions, uvicorn's
sans-I/O WebSocket implementation (`websockets-sansio`, which chatd's protocol class extends),
httptools, uvloop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.baselines.relay import run_relay
from bench.context import Ctx, log
from bench.peers import install
from bench.peers.procs import Procs

HERE = Path(__file__).resolve().parent.parent / "peers"


def run(ctx: Ctx) -> dict[str, Any]:
    assert ctx.stack is not None
    log("sio-python: installing python-socketio into bench/.peers/pysio")
    python = install.venv(
        "pysio", [*install.PY_RELAY, *install.same_as_chatd("uvicorn[standard]", "websockets", "uvloop")]
    )
    stack = ctx.stack

    def start(procs: Procs, socks: list[Path]) -> None:
        env = {"REDIS_URL": stack.redis_url, "PATH": "/usr/bin:/bin"}
        for i, sock in enumerate(socks):
            procs.spawn(
                f"worker-{i + 1}",
                [
                    str(python),
                    "-m",
                    "uvicorn",
                    "sio_server:app",
                    "--uds",
                    str(sock),
                    "--ws",
                    "websockets-sansio",
                    "--http",
                    "httptools",
                    "--loop",
                    "uvloop",
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                env=env,
                cwd=HERE,
            )

    result = run_relay(ctx, "sio-python", start)
    result["ws_implementation"] = "websockets-sansio"  # as chatd's (src/chatd/wire.py)
    result["versions"] = install.versions(
        python, ["python-socketio", "python-engineio", "uvicorn", "redis", "websockets", "uvloop"]
    )
    return result
