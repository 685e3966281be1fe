"""A push service of the tests' own on loopback (the real ones are not reachable here), and the
browser side of a subscription: a P-256 key pair and an auth secret that decrypt what chatd sends."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

import http_ece
import orjson
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Subscription:
    """What a browser's PushManager makes: the endpoint, and keys only it can decrypt with."""

    endpoint: str
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def json(self) -> dict[str, Any]:
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"endpoint": self.endpoint, "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)}}

    def decrypt(self, received: Received) -> dict[str, Any]:
        plain = http_ece.decrypt(
            received.body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"
        )
        found: dict[str, Any] = orjson.loads(plain)
        return found


async def unattended(redis_url: str, uid: int, timeout: float = 10) -> None:
    """Barrier: chatd sees no open socket of `uid` (every connection entry closed, in its grace
    period, or gone), as its push decision does (presence.py ``unattended``)."""
    from chatd.presence import _keys

    conns, _, grace, _ = _keys(uid)[:4]
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(timeout):
            while set(await client.zrange(conns, 0, -1)) - set(await client.smembers(grace)):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        await client.aclose()


class PushServer:
    """Answers 201 to every POST, 410 on paths in `gone`, and never on paths in `hang`."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.gone: set[str] = set()
        self.hang: set[str] = set()
        self.hanging = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = asyncio.Event()
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def subscription(self, path: str) -> Subscription:
        return Subscription(f"http://127.0.0.1:{self.port}{path}")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._closing.set()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def to(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait(self, path: str, count: int = 1, timeout: float = 15) -> list[Received]:
        async with asyncio.timeout(timeout), self._changed:
            while len(self.to(path)) < count:
                await self._changed.wait()
        return self.to(path)

    async def wait_hanging(self, count: int, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout), self._changed:
            while self.hanging < count:
                await self._changed.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while line := await reader.readline():
                _, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                async with self._changed:
                    self.received.append(Received(path, headers, body))
                    if path in self.hang:
                        self.hanging += 1
                    self._changed.notify_all()
                if path in self.hang:
                    await self._closing.wait()
                    break
                status = "410 Gone" if path in self.gone else "201 Created"
                writer.write(f"HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._tasks.discard(task)
            self._writers.discard(writer)
