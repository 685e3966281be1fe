"""A Matrix client for the Synapse peer (d): send with PUT .../send/m.room.message/<txn>
(the 200 answer is the ack: Synapse has persisted the event), receive with /sync long-polls."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from bench.loadgen.conn import Conn
from bench.loadgen.recorder import Recorder, now

SYNC_FILTER = orjson.dumps(
    {
        "room": {"timeline": {"limit": 1000}, "state": {"lazy_load_members": True}},
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    }
).decode()


def client(base_url: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits)


class MatrixConn(Conn):
    def __init__(self, rec: Recorder, tag: str, token: str, mxid: str, http: httpx.AsyncClient) -> None:
        super().__init__(rec, tag)
        self.mxid = mxid
        self.http = http
        self.headers = {"authorization": f"Bearer {token}"}
        self.next_batch = ""
        self.tasks: set[asyncio.Task[None]] = set()
        self.reader: asyncio.Task[None] | None = None

    async def open(self, url: str, src_ip: str | None, deflate: bool, since: dict[str, int] | None) -> None:
        first = await self.http.get(
            "/_matrix/client/v3/sync", params={"timeout": "0", "filter": SYNC_FILTER}, headers=self.headers
        )
        first.raise_for_status()
        self.next_batch = first.json()["next_batch"]
        self.reader = asyncio.create_task(self._sync_loop())

    async def send(self, target: Any, key: str, body: str) -> None:
        task = asyncio.create_task(self._put(str(target), key, body))  # open loop: do not wait
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _put(self, room: str, key: str, body: str) -> None:
        path = f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/{key}"
        try:
            response = await self.http.put(
                path, json={"msgtype": "m.text", "body": body}, headers=self.headers
            )
        except httpx.HTTPError as exc:
            self.rec.error(key, f"{type(exc).__name__}: {exc}")
            return
        if response.status_code == 200:
            self.rec.ack(key, now())
        else:
            self.rec.error(key, f"{response.status_code} {response.text[:150]}")

    async def _sync_loop(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                try:
                    response = await self.http.get(
                        "/_matrix/client/v3/sync",
                        params={"since": self.next_batch, "timeout": "30000", "filter": SYNC_FILTER},
                        headers=self.headers,
                    )
                except httpx.HTTPError:
                    await asyncio.sleep(0.5)
                    continue
                at = now()
                if response.status_code != 200:
                    await asyncio.sleep(0.5)
                    continue
                data = response.json()
                self.next_batch = data["next_batch"]
                for room in data.get("rooms", {}).get("join", {}).values():
                    for event in room.get("timeline", {}).get("events", []):
                        if event.get("type") == "m.room.message" and event.get("sender") != self.mxid:
                            self.rec.delivered(event.get("content", {}).get("body", ""), at)

    def abort(self) -> None:
        if self.reader is not None:
            self.reader.cancel()

    async def close(self) -> None:
        self.abort()
