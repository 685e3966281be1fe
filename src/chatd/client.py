"""A small terminal client: `chatd client register|login|chat|logout` (see README)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import websockets

CONFIG = Path(os.environ.get("CHATD_CLIENT_CONFIG", Path.home() / ".chatd-client.json"))


def _saved() -> dict[str, Any]:
    try:
        return cast(dict[str, Any], json.loads(CONFIG.read_text()))
    except (OSError, ValueError):
        return {}


def _save(url: str, session: dict[str, Any]) -> None:
    data = _saved()
    data[url] = session
    CONFIG.touch(mode=0o600, exist_ok=True)
    CONFIG.write_text(json.dumps(data, indent=2))


def _session(url: str) -> dict[str, Any]:
    session: dict[str, Any] | None = _saved().get(url)
    if not session:
        raise SystemExit(f"chatd: not logged in to {url}; run `chatd client --url {url} login NAME`")
    return session


def _call(url: str, method: str, path: str, token: str | None = None, **body: Any) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.request(method, url + path, json=body or None, headers=headers, timeout=10)
    if response.status_code >= 400:
        error = response.json().get("error", {})
        raise SystemExit(f"chatd: {error.get('code')}: {error.get('message')}")
    return response.json() if response.content else None


def _password(args: argparse.Namespace) -> str:
    return args.password or os.environ.get("CHATD_PASSWORD") or getpass.getpass("password: ")


def cmd_register(args: argparse.Namespace) -> int:
    user = _call(args.url, "POST", "/v1/register", username=args.username, password=_password(args))
    print(f"registered {user['username']} (user {user['user_id']})")
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    result = _call(args.url, "POST", "/v1/login", username=args.username, password=_password(args))
    _save(
        args.url,
        {"token": result["token"], "user_id": result["user_id"], "username": result["username"], "seen": {}},
    )
    print(f"logged in as {result['username']}")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    _call(args.url, "POST", "/v1/logout", _session(args.url)["token"])
    data = _saved()
    data.pop(args.url, None)
    CONFIG.write_text(json.dumps(data, indent=2))
    print("logged out")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    session = _session(args.url)
    if args.target.startswith("#"):
        conv = _call(args.url, "GET", f"/v1/conversations/{args.target[1:]}", session["token"])
    else:
        conv = _call(args.url, "POST", "/v1/conversations/direct", session["token"], username=args.target)
    members = _call(args.url, "GET", f"/v1/conversations/{conv['id']}/members?limit=1000", session["token"])[
        "members"
    ]
    names = {m["user_id"]: m["username"] for m in members}
    print(f"conversation #{conv['id']} ({conv['kind']}); type a line and press enter, ^D to quit")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Chat(args.url, session, conv["id"], names).run())
    return 0


class Chat:
    """Sends lines, prints events; reconnects with `since` and resends what was not acked."""

    def __init__(self, url: str, session: dict[str, Any], cid: int, names: dict[int, str]):
        self.url = url
        self.ws_url = url.replace("http", "ws", 1) + "/v1/ws"
        self.session = session
        self.cid = cid
        self.names = names
        self.seen = int(session.get("seen", {}).get(str(cid), 0))
        self.unacked: dict[str, str] = {}
        self.outbox: asyncio.Queue[str] = asyncio.Queue()

    async def run(self) -> None:
        reader = asyncio.create_task(self._stdin())
        try:
            await self._connect_loop(reader)
        finally:
            _save(self.url, self.session)  # remember the last seq seen, for the next `since`

    async def _connect_loop(self, reader: asyncio.Task[None]) -> None:
        while not reader.done():
            try:
                async with websockets.connect(self.ws_url, max_size=2**20) as ws:
                    await self._session(ws, reader)
            except (OSError, websockets.ConnectionClosed) as exc:
                if reader.done():
                    break
                print(f"* disconnected ({exc}); reconnecting", file=sys.stderr)
                await asyncio.sleep(1)

    async def _session(self, ws: Any, reader: asyncio.Task[None]) -> None:
        since = {str(self.cid): self.seen} if self.seen else {}
        await ws.send(orjson.dumps({"type": "auth", "token": self.session["token"], "since": since}).decode())
        for client_msg_id, body in self.unacked.items():  # resend: the server dedupes
            await ws.send(self._frame(client_msg_id, body))
        sender = asyncio.create_task(self._send_loop(ws))
        try:
            async for raw in ws:
                self._show(orjson.loads(raw))
        finally:
            sender.cancel()

    def _frame(self, client_msg_id: str, body: str) -> str:
        return orjson.dumps(
            {"type": "send", "conversation_id": self.cid, "client_msg_id": client_msg_id, "body": body}
        ).decode()

    async def _send_loop(self, ws: Any) -> None:
        while True:
            body = await self.outbox.get()
            client_msg_id = uuid.uuid4().hex
            self.unacked[client_msg_id] = body
            await ws.send(self._frame(client_msg_id, body))

    async def _stdin(self) -> None:
        while line := await asyncio.to_thread(sys.stdin.readline):
            if line.strip():
                await self.outbox.put(line.rstrip("\n"))

    def _show(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message" and frame["conversation_id"] == self.cid:
            self.seen = max(self.seen, frame["seq"])
            who = self.names.get(frame["sender_id"], f"user {frame['sender_id']}")
            if frame["kind"] == "text":
                print(f"[{frame['seq']}] {who}: {frame['body']}", flush=True)
            else:
                print(f"[{frame['seq']}] * {who} {frame['kind']} {frame.get('user_ids')}")
            self.session.setdefault("seen", {})[str(self.cid)] = self.seen
        elif kind == "ack":
            self.unacked.pop(frame["client_msg_id"], None)
        elif kind == "error":
            print(f"* error {frame['code']}: {frame['message']}", file=sys.stderr, flush=True)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    client = sub.add_parser("client", help="a terminal chat client")
    client.add_argument("--url", default=os.environ.get("CHATD_URL", "http://127.0.0.1:8080"))
    client_sub = client.add_subparsers(dest="client_command", required=True)
    for name, func in (("register", cmd_register), ("login", cmd_login)):
        cmd = client_sub.add_parser(name)
        cmd.add_argument("username")
        cmd.add_argument("--password", help="or CHATD_PASSWORD, or asked for")
        cmd.set_defaults(func=func)
    chat = client_sub.add_parser("chat", help="chat with a user (name) or in a conversation (#id)")
    chat.add_argument("target")
    chat.set_defaults(func=cmd_chat)
    logout = client_sub.add_parser("logout")
    logout.set_defaults(func=cmd_logout)
