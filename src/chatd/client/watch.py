"""`chatd client --user X watch`: one line per incoming message, of any conversation, for people
to pipe into a notifier of their own. Reconnects and catches up (no gap, no duplicate).

Each line: ``HH:MM #ID TITLE SENDER: BODY`` (TITLE is ``(group title)`` or ``(direct)``;
newlines in BODY are written as ``\\n``). Muted conversations are included, marked
`` [muted]`` after TITLE; the own messages (from any device) are not.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import orjson
import websockets

from chatd.client.api import Api
from chatd.client.lines import clock
from chatd.client.session import Stop

Frame = dict[str, Any]


class Watch:
    def __init__(self, url: str, profile: dict[str, Any], out: Callable[[str], None]) -> None:
        self.url = url
        self.token: str = profile["token"]
        self.me: int = profile["user_id"]
        self.out = out
        self.last: dict[int, int] = {}  # conversation -> highest seq seen (the `since`)
        self.titles: dict[int, str] = {}
        self.names: dict[int, str] = {}
        self.muted: set[int] = set()

    async def run(self) -> None:
        attempt = 0
        while True:
            code = await self._connect_once()
            if code == 4001:
                raise Stop("the server refused the token (revoked or invalid)", auth=True)
            attempt = 0 if code in (1012, 1000) else attempt + 1
            await asyncio.sleep(random.uniform(0, min(30.0, 0.5 * 2**attempt)))

    async def _connect_once(self) -> int | None:
        ws_url = self.url.replace("http", "ws", 1) + "/v1/ws"
        try:
            async with websockets.connect(ws_url, max_size=2**22, open_timeout=10) as ws:
                since = {str(cid): seq for cid, seq in self.last.items()}
                await ws.send(orjson.dumps({"type": "auth", "token": self.token, "since": since}).decode())
                async for raw in ws:
                    await self._frame(orjson.loads(raw))
                return ws.close_code
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        except (OSError, TimeoutError, websockets.InvalidHandshake):
            return None

    async def _frame(self, frame: Frame) -> None:
        kind = frame.get("type")
        if kind in ("ready", "conversations"):
            for conv in frame["conversations"]:
                cid = conv["id"]
                self.last.setdefault(cid, conv["last_seq"])
                self.titles[cid] = f"({conv['title']})" if conv["kind"] == "group" else "(direct)"
            if kind == "ready":
                async with Api(self.url, self.token) as api:
                    settings = await api.call("GET", "/v1/me/notifications")
                self.muted = set(settings["muted"])
        elif kind == "conversation_added":
            conv = frame["conversation"]
            self.last.setdefault(conv["id"], frame.get("since", conv["last_seq"]))
            self.titles[conv["id"]] = f"({conv['title']})" if conv["kind"] == "group" else "(direct)"
        elif kind == "notify_settings":
            self.muted = set(frame["muted"])
        elif kind == "message":
            cid, seq = frame["conversation_id"], frame["seq"]
            if seq <= self.last.get(cid, 0) and cid in self.last:
                return
            self.last[cid] = seq
            if frame["kind"] == "text" and frame["sender_id"] != self.me:
                await self._line(frame)

    async def _line(self, event: Frame) -> None:
        cid, uid = event["conversation_id"], event["sender_id"]
        if uid not in self.names:
            async with Api(self.url, self.token) as api:
                self.names.update(await api.members(cid))
        title = self.titles.get(cid, "")
        muted = " [muted]" if cid in self.muted else ""
        body = event["body"].replace("\\", "\\\\").replace("\n", "\\n")
        sender = self.names.get(uid, f"user {uid}")
        self.out(f"{clock(event['created_at'])} #{cid} {title}{muted} {sender}: {body}")
