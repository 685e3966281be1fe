"""Test clients: a WebSocket client that records every frame, and an HTTP helper."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis
import websockets
from websockets.asyncio.client import ClientConnection

Frame = dict[str, Any]
_names = itertools.count(1)


def serve_argv(port: int, metrics_port: int) -> list[str]:
    """`chatd serve` on a loopback port, its metrics on another."""
    return [sys.executable, "-m", "chatd", "serve", "--port", str(port), "--metrics-port", str(metrics_port)]


def wait_for_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 30) -> None:
    """Until the worker at `url` answers /readyz 200; its log if it dies or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(log.read_text())


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}{next(_names)}-{uuid.uuid4().hex[:8]}"


def ack_for(client_msg_id: str) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "ack" and f["client_msg_id"] == client_msg_id


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/v1/ws"


class Ws:
    """Keeps every frame the server sent, in order; tests wait for frames matching a predicate."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.frames: list[Frame] = []
        self.ready: Frame = {}
        self.close_code: int | None = None
        self._changed = asyncio.Condition()
        self._consumed: set[int] = set()
        self._first_unconsumed = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, base_url: str, token: str, since: dict[int, int] | None = None, wait_synced: bool = True
    ) -> Ws:
        conn = await websockets.connect(ws_url(base_url), max_size=2**24)
        ws = cls(conn)
        auth: Frame = {"type": "auth", "token": token}
        if since is not None:
            auth["since"] = {str(k): v for k, v in since.items()}
        await ws.send_json(auth)
        ws.ready = await ws.expect(lambda f: f["type"] in ("ready", "error"))
        if wait_synced and ws.ready["type"] == "ready":
            await ws.expect(lambda f: f["type"] == "synced")
        return ws

    async def _read(self) -> None:
        try:
            async for raw in self.conn:
                frame = orjson.loads(raw)
                async with self._changed:
                    self.frames.append(frame)
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.conn.close_code
            async with self._changed:
                self._changed.notify_all()

    async def send_json(self, frame: Frame) -> None:
        await self.conn.send(orjson.dumps(frame).decode())

    async def expect(self, pred: Callable[[Frame], bool], timeout: float = 10) -> Frame:
        """The first frame not yet returned that matches `pred`.

        Each wake-up looks only at frames it has not examined yet, so waiting while thousands
        of frames arrive stays linear and the event loop keeps answering the server's pings.
        """
        checked = self._first_unconsumed
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for index in range(checked, len(self.frames)):
                    if index not in self._consumed and pred(self.frames[index]):
                        self._consumed.add(index)
                        while self._first_unconsumed in self._consumed:
                            self._first_unconsumed += 1
                        return self.frames[index]
                checked = len(self.frames)
                if self._reader.done():
                    raise ConnectionError(f"closed ({self.close_code}) before a matching frame")
                await self._changed.wait()

    async def send(self, cid: int, body: str, client_msg_id: str | None = None) -> Frame:
        """Send a message; returns its ack (or error) frame."""
        client_msg_id = client_msg_id or uuid.uuid4().hex
        await self.send_json(
            {"type": "send", "conversation_id": cid, "client_msg_id": client_msg_id, "body": body}
        )
        return await self.expect(
            lambda f: (f["type"] == "ack" and f["client_msg_id"] == client_msg_id) or (f["type"] == "error")
        )

    async def read(self, cid: int, seq: int) -> Frame:
        """Mark read up to `seq`; returns the read_state (or error) reply."""
        ref = uuid.uuid4().hex
        await self.send_json({"type": "read", "id": ref, "conversation_id": cid, "seq": seq})
        return await self.expect(lambda f: f.get("ref") == ref)

    def messages(self, cid: int) -> list[Frame]:
        return [f for f in self.frames if f["type"] == "message" and f["conversation_id"] == cid]

    async def wait_seq(self, cid: int, seq: int, timeout: float = 10) -> list[Frame]:
        async with asyncio.timeout(timeout), self._changed:
            while not any(f["seq"] >= seq for f in self.messages(cid)):
                if self._reader.done():
                    raise ConnectionError(f"closed ({self.close_code}) before seq {seq}")
                await self._changed.wait()
        return self.messages(cid)

    async def wait_closed(self, timeout: float = 10) -> int | None:
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    async def close(self) -> None:
        await self.conn.close()
        await asyncio.gather(self._reader, return_exceptions=True)


class Api:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        sent = {**(headers or {}), **({"authorization": f"Bearer {token}"} if token else {})}
        return await self.http.request(method, path, json=json, headers=sent, **kw)

    async def user(self, prefix: str = "u") -> User:
        name = unique_name(prefix)
        password = "correct horse battery"
        created = await self.call("POST", "/v1/register", json={"username": name, "password": password})
        assert created.status_code == 201, created.text
        login = await self.call("POST", "/v1/login", json={"username": name, "password": password})
        assert login.status_code == 200, login.text
        return User(login.json()["user_id"], name, login.json()["token"])

    async def direct(self, a: User, b: User) -> int:
        # By username: an id is only accepted for someone `a` already shares a conversation with.
        response = await self.call("POST", "/v1/conversations/direct", a.token, {"username": b.name})
        assert response.status_code in (200, 201), response.text
        cid: int = response.json()["id"]
        return cid

    async def group(self, owner: User, members: list[User], title: str = "team") -> int:
        response = await self.call(
            "POST",
            "/v1/conversations/group",
            owner.token,
            {"title": title, "usernames": [m.name for m in members]},
        )
        assert response.status_code == 201, response.text
        cid: int = response.json()["id"]
        return cid

    async def history(self, user: User, cid: int, **params: Any) -> list[Frame]:
        response = await self.call("GET", f"/v1/conversations/{cid}/messages", user.token, params=params)
        assert response.status_code == 200, response.text
        messages: list[Frame] = response.json()["messages"]
        return messages


class User:
    def __init__(self, user_id: int, name: str, token: str) -> None:
        self.id = user_id
        self.name = name
        self.token = token


async def wait_until_blocked(watcher: asyncpg.Connection, holder_pid: int, timeout: float = 10) -> None:
    """Barrier: some session is waiting for a lock that backend `holder_pid` holds."""
    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            if await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", holder_pid
            ):
                return
            await asyncio.sleep(0.005)


async def sentinel(sender: Ws, receiver: Ws, cid: int) -> None:
    """Barrier: `sender` sends in `cid` and `receiver` gets it. Whatever the workers published
    before that send has reached `receiver` by then (one subscriber per worker, in order)."""
    ack = await sender.send(cid, "sentinel")
    assert ack["type"] == "ack", ack
    await receiver.wait_seq(cid, ack["seq"])


# A worker on a Redis of its own with no periodic work (flush, presence heartbeats and sweeps):
# the Redis commands counted are only what the test's frames do.
QUIET_REDIS_WORKER = {
    "CHATD_RECEIPT_FLUSH_INTERVAL_S": "3600",
    "CHATD_PRESENCE_HEARTBEAT_S": "600",
    "CHATD_PRESENCE_TTL_S": "3600",
    "CHATD_PRESENCE_SWEEP_S": "600",
}
REDIS_WORK = ("zadd", "zcount", "zscore", "hset", "hget", "sadd", "evalsha")


async def redis_calls(redis: aioredis.Redis) -> dict[str, int]:
    """Calls so far of each command in REDIS_WORK (INFO commandstats)."""
    stats = await redis.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in REDIS_WORK}


async def seed_history(
    db: asyncpg.Connection, cid: int, sender_id: int, bodies: list[str], prefix: str = "m"
) -> None:
    """Messages written straight into Postgres (the storage's own batch append), no sends."""
    await db.execute(
        "SELECT count(*) FROM chatd_append_many($1, $2, $3, $4, $5)",
        [cid] * len(bodies),
        [sender_id] * len(bodies),
        [f"{prefix}{n}" for n in range(len(bodies))],
        bodies,
        ["text"] * len(bodies),
    )
