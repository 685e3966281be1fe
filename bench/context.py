"""What every scenario gets: mode, the stack, load generators, process accounting, a log."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.chatstack import BenchStack
from bench.loadgen.fleet import Fleet

LoggerFn = Callable[[str], None]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Ctx:
    quick: bool
    workers: int
    agents: int
    work: Path
    stack: BenchStack | None = None
    deflate: bool = False
    notes: list[str] = field(default_factory=list)

    def fleet(self, agents: int | None = None) -> Fleet:
        return Fleet(agents or self.agents)

    def src_ips(self, agent: int) -> list[str]:
        """Loopback source addresses for one load generator (more source ports for many sockets)."""
        return [f"127.0.0.{2 + agent * 4 + k}" for k in range(4)]

    @property
    def ws_url(self) -> str:
        assert self.stack is not None
        return self.stack.url.replace("http://", "ws://") + "/v1/ws"

    def roots(self, fleet: Fleet | None = None) -> dict[str, int]:
        roots = self.stack.process_roots() if self.stack else {}
        return {**roots, **(fleet.pids if fleet else {})}


class Placement:
    """Assigns clients to load generators round-robin and remembers each one's local index."""

    def __init__(self, agents: int) -> None:
        self.clients: list[list[dict[str, Any]]] = [[] for _ in range(agents)]

    def add(self, client: dict[str, Any], agent: int) -> tuple[int, int]:
        bucket = self.clients[agent % len(self.clients)]
        bucket.append(client)
        return agent % len(self.clients), len(bucket) - 1

    def connect(
        self, fleet: Fleet, url: str, ctx: Ctx, proto: str = "chatd", concurrency: int = 50
    ) -> dict[str, Any]:
        started = time.monotonic()
        per_agent = [{"clients": c, "src_ips": ctx.src_ips(i)} for i, c in enumerate(self.clients)]
        replies = fleet.all(
            "connect", per_agent, url=url, proto=proto, deflate=ctx.deflate, concurrency=concurrency
        )
        for bucket in self.clients:
            bucket.clear()  # the next connect() appends after these
        errors = [e for r in replies for e in r.get("errors", [])] + [
            r["error"] for r in replies if "error" in r
        ]
        return {
            "connected": sum(r.get("connected", 0) for r in replies),
            "failed": sum(r.get("failed", 0) for r in replies),
            "seconds": round(time.monotonic() - started, 2),
            "errors": errors[:5],
        }
