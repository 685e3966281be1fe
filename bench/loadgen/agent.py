"""One load-generator process: a command loop over a pipe, many client sockets, an open-loop sender.

Commands (dicts with "op" and "id"; each gets one reply with the same "id"):
  connect    open clients: [{"token"|"rooms", "tag", "since"?}] through `url`
  step       send at a fixed rate from `t0` for `duration` s, then wait `drain` s; reply with
             the step's acks/deliveries (latency arrays as bytes of array('d'), milliseconds)
  drop       abort every socket tagged `tag` at once
  reconnect  reopen the dropped sockets after uniform(0, jitter) s each, with their `since` map
  verify     gaps and duplicates per socket, given the final seq of each conversation
  marks      send `read` frames at scheduled times (scenario 5; see stateops.py)
  churn      connect, go idle and close users at scheduled times while observers watch presence
  confirm    members confirm delivery every `received_ms` (0: never); replies with the
             `received` frames sent so far
  close      close everything and exit
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import threading
from multiprocessing.connection import Connection as Pipe
from typing import Any

import httpx

from bench.loadgen import matrix, stateops
from bench.loadgen.conn import ChatdConn, Conn, SioConn
from bench.loadgen.recorder import Recorder, body, now
from bench.loadgen.staterec import StateRecorder


class Agent:
    def __init__(self, pipe: Pipe, index: int) -> None:
        self.pipe = pipe
        self.index = index
        self.rec = Recorder()
        self.state = StateRecorder()
        self.conns: list[Conn] = []
        self.url = ""
        self.src_ips: list[str] = []
        self.deflate = False
        self._lock = threading.Lock()
        self.dropped_at: float | None = None
        self.http: httpx.AsyncClient | None = None

    # -- plumbing ------------------------------------------------------------------------
    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        while True:
            cmd: dict[str, Any] = await loop.run_in_executor(None, self.pipe.recv)
            if cmd["op"] == "close":
                for conn in self.conns:
                    conn.abort()
                self.reply(cmd, {"closed": len(self.conns)})
                return
            task = asyncio.create_task(self.run(cmd))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def reply(self, cmd: dict[str, Any], result: dict[str, Any]) -> None:
        with self._lock:
            self.pipe.send({"id": cmd["id"], "result": result})

    async def run(self, cmd: dict[str, Any]) -> None:
        try:
            result = await getattr(self, "op_" + cmd["op"])(cmd)
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        self.reply(cmd, result)

    def src_ip(self, n: int) -> str | None:
        return self.src_ips[n % len(self.src_ips)] if self.src_ips else None

    # -- ops -----------------------------------------------------------------------------
    async def op_connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.url, self.src_ips, self.deflate = cmd["url"], cmd.get("src_ips", []), cmd.get("deflate", False)
        sem = asyncio.Semaphore(cmd.get("concurrency", 50))
        errors: list[str] = []
        started = now()
        first = len(self.conns)
        new: list[Conn] = []
        proto = cmd.get("proto", "chatd")
        if proto == "matrix" and self.http is None:
            self.http = matrix.client(self.url, 100 + len(cmd["clients"]))
        for spec in cmd["clients"]:
            tag = spec.get("tag", "")
            if proto == "chatd":
                watch = frozenset(spec.get("watch", ()))
                new.append(ChatdConn(self.rec, tag, spec["token"], self.state, watch))
            elif proto == "sio":
                new.append(SioConn(self.rec, tag, spec["rooms"]))
            else:
                assert self.http is not None
                new.append(matrix.MatrixConn(self.rec, tag, spec["token"], spec["mxid"], self.http))
        self.conns.extend(new)

        async def one(n: int, conn: Conn) -> bool:
            async with sem:
                try:
                    await conn.open(self.url, self.src_ip(n), self.deflate, None)
                    return True
                except Exception as exc:
                    if len(errors) < 5:
                        errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    return False

        ok = await asyncio.gather(*(one(first + i, c) for i, c in enumerate(new)))
        return {
            "connected": sum(ok),
            "failed": len(ok) - sum(ok),
            "errors": errors,
            "seconds": round(now() - started, 3),
            "first": first,
        }

    async def op_step(self, cmd: dict[str, Any]) -> dict[str, Any]:
        step, t0, duration, rate = cmd["step"], cmd["t0"], cmd["duration"], cmd["rate"]
        sends: list[tuple[int, Any]] = [(int(s[0]), s[1]) for s in cmd.get("sends", [])]
        pad = "x" * cmd.get("pad", 0)
        data = self.rec.open(step)
        if sends and rate > 0:
            total = int(duration * rate)
            start = t0 + cmd.get("phase", 0.0)
            for i in range(total):
                sched = start + i / rate
                delay = sched - now()
                if delay > 0:
                    await asyncio.sleep(delay)
                conn_index, target = sends[i % len(sends)]
                conn = self.conns[conn_index]
                key = f"a{self.index}.{step}.{i}"
                self.rec.sent(key, step, sched)
                try:
                    await conn.send(target, key, body(step, sched, pad))
                except Exception as exc:
                    self.rec.error(key, f"send: {type(exc).__name__}: {exc}")
        end = t0 + duration + cmd.get("drain", 2.0)
        await asyncio.sleep(max(0.0, end - now()))
        data = self.rec.close(step)
        return {
            "sent": data.sent,
            "acked": data.acked,
            "errors": data.errors,
            "delivered": data.delivered,
            "ack_ms": data.ack_ms.tobytes(),
            "deliver_ms": data.deliver_ms.tobytes(),
            "error_samples": data.error_samples,
            "send_lag_max_ms": round(data.send_lag_max_ms, 2),
            "last_acked": dict(self.rec.last_acked),
        }

    async def op_drop(self, cmd: dict[str, Any]) -> dict[str, Any]:
        victims = [c for c in self.conns if c.tag == cmd["tag"]]
        self.dropped_at = now()
        for conn in victims:
            conn.abort()
        return {"dropped": len(victims), "at": self.dropped_at}

    async def op_reconnect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        jitter, deadline = cmd["jitter"], now() + cmd.get("timeout", 120.0)
        victims = [(n, c) for n, c in enumerate(self.conns) if c.tag == cmd["tag"] and c.ws is None]
        attempts = 0
        failures: list[str] = []

        async def one(n: int, conn: Conn) -> float | None:
            nonlocal attempts
            assert isinstance(conn, ChatdConn)
            await asyncio.sleep(random.uniform(0, jitter))
            while now() < deadline:
                attempts += 1
                try:
                    await conn.open(self.url, self.src_ip(n), self.deflate, conn.since())
                    return conn.synced_at
                except Exception as exc:
                    if len(failures) < 5:
                        failures.append(f"{type(exc).__name__}: {exc}"[:200])
                    await asyncio.sleep(0.5 + random.random())
            return None

        synced = await asyncio.gather(*(one(n, c) for n, c in victims))
        done = [t for t in synced if t is not None]
        return {
            "reconnected": len(done),
            "failed": len(synced) - len(done),
            "attempts": attempts,
            "synced_at": done,
            "errors": failures,
        }

    async def op_verify(self, cmd: dict[str, Any]) -> dict[str, Any]:
        final: dict[int, int] = {int(k): v for k, v in cmd["final"].items()}
        missing = dupes = tail = 0
        for conn in self.conns:
            if not isinstance(conn, ChatdConn) or conn.tag != cmd["tag"]:
                continue
            missing += conn.missing
            dupes += conn.dupes
            for cid, nxt in conn.expected.items():
                if cid in final and nxt - 1 < final[cid]:
                    tail += final[cid] - (nxt - 1)
        return {"missing": missing, "duplicates": dupes, "tail_missing": tail}

    async def op_marks(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return await stateops.marks(self, cmd)

    async def op_churn(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return await stateops.churn(self, cmd)

    async def op_confirm(self, cmd: dict[str, Any]) -> dict[str, Any]:
        chatd = [c for c in self.conns if isinstance(c, ChatdConn)]
        for conn in chatd:
            conn.received_ms = float(cmd["received_ms"])
        return {"confirmed": sum(c.confirmed for c in chatd)}

    async def op_status(self, cmd: dict[str, Any]) -> dict[str, Any]:
        live = sum(1 for c in self.conns if c.ws is not None and c.closed_at is None)
        return {"open": live, "total": len(self.conns), "last_acked": dict(self.rec.last_acked)}


def main(pipe: Pipe, index: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.run(Agent(pipe, index).serve())
    except ImportError:  # pragma: no cover
        asyncio.run(Agent(pipe, index).serve())
