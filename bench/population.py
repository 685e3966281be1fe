"""Users and conversations for a scenario, made through chatd's HTTP API (setup, not measured)."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import websockets

PASSWORD = "bench-password-not-secret"  # noqa: S105
_run = secrets.token_hex(3)
_names = itertools.count(1)


@dataclass(frozen=True)
class User:
    id: int
    token: str
    name: str


class Api:
    def __init__(self, base_url: str, concurrency: int = 32) -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.http = httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits)
        self.sem = asyncio.Semaphore(concurrency)

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, token: str | None = None, json: Any = None) -> Any:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        async with self.sem:
            for attempt in range(5):
                response = await self.http.request(method, path, json=json, headers=headers)
                if response.status_code < 500 and response.status_code != 429:
                    break
                await asyncio.sleep(0.2 * (attempt + 1))
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return response.json()

    async def user(self) -> User:
        name = f"b{_run}x{next(_names)}"
        await self.call("POST", "/v1/register", json={"username": name, "password": PASSWORD})
        login = await self.call("POST", "/v1/login", json={"username": name, "password": PASSWORD})
        return User(login["user_id"], login["token"], name)

    async def users(self, count: int) -> list[User]:
        return list(await asyncio.gather(*(self.user() for _ in range(count))))

    async def speak(self, user: User, cid: int) -> None:
        """Send one message as `user` in `cid`: a member who never did has not taken part, and
        chatd shares nobody's presence through such a conversation (docs/protocol.md §4.9)."""
        url = str(self.http.base_url).rstrip("/").replace("http", "ws", 1) + "/v1/ws"
        async with self.sem, websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": user.token}))
            frame = {"type": "send", "conversation_id": cid, "client_msg_id": "hello", "body": "hello"}
            await ws.send(json.dumps(frame))
            async for raw in ws:
                reply = json.loads(raw)
                if reply["type"] == "error":
                    raise RuntimeError(f"speak: {reply}")
                if reply["type"] == "ack":
                    return

    async def take_part(self, user: User, cid: int, member: User) -> None:
        """Take part in group `cid` without a message: name a member who is already in it, which
        changes nothing else (adding members is taking part, docs/protocol.md §4.9). Only then
        are `user`'s read marks counted in the group's receipts (§4.8)."""
        await self.call("POST", f"/v1/conversations/{cid}/members", user.token, {"usernames": [member.name]})

    async def direct(self, a: User, b: User) -> int:
        # By username: ids are accepted only for people one already shares a conversation with.
        conv = await self.call("POST", "/v1/conversations/direct", a.token, {"username": b.name})
        return int(conv["id"])

    async def group(self, owner: User, members: list[User], title: str = "bench") -> int:
        body = {"title": title, "usernames": [m.name for m in members if m.id != owner.id]}
        conv = await self.call("POST", "/v1/conversations/group", owner.token, body)
        return int(conv["id"])
