"""The parent's side of the load generators: spawn them, send commands, gather replies."""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
from multiprocessing.connection import Connection as Pipe
from multiprocessing.process import BaseProcess
from typing import Any

from bench.loadgen import agent


class Fleet:
    def __init__(self, size: int) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Pipe] = []
        self.procs: list[BaseProcess] = []
        self._ids = itertools.count(1)
        self._mail: list[dict[int, dict[str, Any]]] = []
        for index in range(size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=agent.main, args=(child, index), daemon=True, name=f"bench-agent-{index}"
            )
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
            self._mail.append({})

    def __len__(self) -> int:
        return len(self.pipes)

    @property
    def pids(self) -> dict[str, int]:
        return {f"loadgen-{i + 1}": p.pid for i, p in enumerate(self.procs) if p.pid is not None}

    def send(self, index: int, op: str, **args: Any) -> int:
        req = next(self._ids)
        self.pipes[index].send({"op": op, "id": req, **args})
        return req

    def wait(self, index: int, req: int, timeout: float = 900) -> dict[str, Any]:
        mail = self._mail[index]
        while req not in mail:
            if not self.pipes[index].poll(timeout):
                raise TimeoutError(f"load generator {index} did not answer {req}")
            msg = self.pipes[index].recv()
            mail[msg["id"]] = msg["result"]
        return mail.pop(req)

    def all(
        self, op: str, per_agent: list[dict[str, Any]] | None = None, **args: Any
    ) -> list[dict[str, Any]]:
        """Send `op` to every agent (with its own extra args, if given) and wait for all replies."""
        reqs = [self.send(i, op, **args, **(per_agent[i] if per_agent else {})) for i in range(len(self))]
        return [self.wait(i, req) for i, req in enumerate(reqs)]

    def order(self, tag: str) -> dict[str, int]:
        """Seq gaps and repeats the clients tagged `tag` saw in their conversations, summed."""
        replies = self.all("verify", tag=tag, final={})
        return {k: sum(r.get(k, 0) for r in replies) for k in ("missing", "duplicates")}

    def close(self) -> None:
        for i in range(len(self)):
            with contextlib.suppress(OSError, EOFError, TimeoutError):
                self.wait(i, self.send(i, "close"), timeout=10)
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
