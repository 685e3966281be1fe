"""What one user's presence changes cost when they are in a big group (issue 13).

A user who created a group of `--members` members connects and disconnects `--cycles` times
while `--connected` other members of that group hold a WebSocket each (spread over the
workers, connected to them directly). Each cycle is one `online` and one `offline`
transition; an observer who shares a direct conversation with the user waits for each, so a
cycle ends only once its transitions were published. Reported: frames the group members'
sockets received per cycle, and the workers' CPU per cycle (utime + stime from /proc),
less the same workers' CPU over an equally long idle window (heartbeats, sweeps).

    .venv/bin/python -m bench.presence_cost [--members 10000 --connected 500 --cycles 100]

It starts its own local stack (`chatd.devstack`) in a temporary directory. To measure an
older commit, extract it and put its `src` first: `PYTHONPATH=/tmp/old/src python -m ...`
(the stack's workers inherit the environment, so they run that code).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from bench.procstat import cpu_seconds
from chatd.devstack import Stack
from chatd.security import hash_token, new_token

PASSWORD = "bench-password-not-secret"  # noqa: S105
ENV = {
    "CHATD_PRESENCE_GRACE_S": "0",  # offline right after the close (one sweep later)
    "CHATD_PRESENCE_SWEEP_S": "0.1",
    "CHATD_LOG_LEVEL": "warning",
    "CHATD_ARGON2_TIME_COST": "1",
    "CHATD_ARGON2_MEMORY_KIB": "1024",
    "CHATD_REGISTRATION": "open",  # its users register without invites
}


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/v1/ws"


class Socket:
    """A connected member: counts every frame it receives."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.frames = 0
        self.seen: list[dict[str, Any]] = []
        self.keep = False
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, base: str, token: str, keep: bool = False) -> Socket:
        conn = await websockets.connect(ws_url(base), max_size=2**24)
        sock = cls(conn)
        sock.keep = keep
        await conn.send(orjson.dumps({"type": "auth", "token": token}).decode())
        await sock.wait(lambda f: f["type"] == "synced")
        return sock

    async def _read(self) -> None:
        try:
            async for raw in self.conn:
                self.frames += 1
                frame = orjson.loads(raw)
                if self.keep or frame["type"] == "synced":
                    self.seen.append(frame)
                self._changed.set()
        except websockets.ConnectionClosed:
            pass

    async def wait(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async with asyncio.timeout(30):
            while True:
                for index, frame in enumerate(self.seen):
                    if pred(frame):
                        del self.seen[: index + 1]
                        return frame
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        await self.conn.close()
        await asyncio.gather(self.task, return_exceptions=True)


async def register(http: httpx.AsyncClient, name: str) -> tuple[int, str]:
    created = await http.post("/v1/register", json={"username": name, "password": PASSWORD})
    assert created.status_code == 201, created.text
    login = await http.post("/v1/login", json={"username": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return login.json()["user_id"], login.json()["token"]


def workers_cpu(stack: Stack) -> float:
    return sum(cpu_seconds(stack.pids[f"worker-{i + 1}"]) for i in range(stack.workers))


async def measure(stack: Stack, members: int, connected: int, cycles: int) -> dict[str, Any]:
    urls = [stack.worker_url(i) for i in range(stack.workers)]
    db = await asyncpg.connect(stack.database_url)
    async with httpx.AsyncClient(base_url=urls[0], timeout=120) as http:
        subject_id, subject_token = await register(http, "subject")
        _, observer_token = await register(http, "observer")
        headers = {"authorization": f"Bearer {subject_token}"}
        direct = await http.post("/v1/conversations/direct", headers=headers, json={"username": "observer"})
        assert direct.status_code == 201, direct.text
        group = await http.post("/v1/conversations/group", headers=headers, json={"title": "everyone"})
        assert group.status_code == 201, group.text
        gid = group.json()["id"]
        names = [
            r["username"]
            for r in await db.fetch(
                "INSERT INTO users (username, password_hash) SELECT 'm' || n, '!'"
                " FROM generate_series(1, $1) AS n RETURNING username",
                members - 1,
            )
        ]
        for start in range(0, len(names), 2000):
            body = {"usernames": names[start : start + 2000]}
            added = await http.post(f"/v1/conversations/{gid}/members", headers=headers, json=body)
            assert added.status_code == 200, added.text
    rows = await db.fetch(
        "SELECT user_id FROM members WHERE conversation_id = $1 AND user_id <> $2 ORDER BY user_id LIMIT $3",
        gid,
        subject_id,
        connected,
    )
    tokens = [new_token() for _ in rows]
    await db.executemany(
        "INSERT INTO tokens (token_hash, user_id) VALUES ($1, $2)",
        [(hash_token(t), r["user_id"]) for t, r in zip(tokens, rows, strict=True)],
    )
    await db.close()
    sockets: list[Socket] = []
    for start in range(0, len(tokens), 50):
        batch = tokens[start : start + 50]
        sockets += await asyncio.gather(
            *(Socket.open(urls[(start + i) % len(urls)], t) for i, t in enumerate(batch))
        )
    observer = await Socket.open(urls[0], observer_token, keep=True)
    await asyncio.sleep(2)  # connects settle

    def presence(status: str) -> Callable[[dict[str, Any]], bool]:
        return lambda f: f["type"] == "presence" and f["user_id"] == subject_id and f["status"] == status

    cpu0, wall0 = workers_cpu(stack), time.monotonic()
    frames0 = sum(s.frames for s in sockets)
    for cycle in range(cycles):
        subject = await Socket.open(urls[cycle % len(urls)], subject_token)
        await observer.wait(presence("online"))
        await subject.close()
        await observer.wait(presence("offline"))
    await asyncio.sleep(1)  # the last fan-out reaches every socket
    cpu1, wall1 = workers_cpu(stack), time.monotonic()
    frames = sum(s.frames for s in sockets) - frames0
    await asyncio.sleep(1)
    idle0 = workers_cpu(stack)
    await asyncio.sleep(wall1 - wall0)
    idle = workers_cpu(stack) - idle0
    for sock in [*sockets, observer]:
        await sock.close()
    busy = cpu1 - cpu0
    return {
        "members": members,
        "connected": len(sockets),
        "cycles": cycles,
        "seconds": round(wall1 - wall0, 2),
        "frames_to_group_sockets": frames,
        "frames_per_cycle": round(frames / cycles, 1),
        "worker_cpu_s": round(busy, 3),
        "idle_worker_cpu_s": round(idle, 3),
        "worker_cpu_ms_per_cycle": round(1000 * busy / cycles, 2),
        "net_worker_cpu_ms_per_cycle": round(1000 * (busy - idle) / cycles, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--connected", type=int, default=500)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="chatd-presence-cost-"))
    stack = Stack(root=root, workers=args.workers, tcp_workers=True, extra_env=ENV)
    try:
        stack.up()
        result = asyncio.run(measure(stack, args.members, args.connected, args.cycles))
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
