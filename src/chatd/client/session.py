"""One open conversation: history, live events, own messages' states, presence, reconnects.

It follows docs/protocol.md §8: `since` catch-up, an outbox resent with the same
`client_msg_id` after every reconnect, backoff with full jitter (reset after `synced`),
1012 reconnects at once, 4001 stops. One writer sends the outbox in order; a send refused
for a reason to retry rewinds it to that send (the server refuses every later one until it
comes again), so lines are stored in the order typed. It writes lines through `out` and
knows nothing of the terminal.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from chatd.client.api import Api
from chatd.client.lines import clock, short, shown, size_text
from chatd.client.own import Own, OwnMessages

Frame = dict[str, Any]
# Refusals after which the send is written again, in order with the ones after it.
RETRYABLE = {"rate_limited", "unavailable", "internal"}
RETRY_LATER_S = 1.0  # when a refusal says nothing of when


class Stop(Exception):
    """The session cannot go on (token revoked, removed from the conversation)."""

    def __init__(self, reason: str, auth: bool = False) -> None:
        super().__init__(reason)
        self.auth = auth


class ChatSession:
    def __init__(
        self,
        url: str,
        profile: dict[str, Any],
        conversation: dict[str, Any],
        names: dict[int, str],
        out: Callable[[str], None],
        refresh: Callable[[], None] = lambda: None,
    ) -> None:
        self.url = url
        self.ws_url = url.replace("http", "ws", 1) + "/v1/ws"
        self.token: str = profile["token"]
        self.me: int = profile["user_id"]
        self.conv = conversation
        self.cid: int = conversation["id"]
        self.names = names
        self.out = out
        self.refresh = refresh
        self.last_seq = 0
        self.read_seq = 0
        self.outbox: dict[str, Own] = {}  # not yet acknowledged, in send order
        self.mine = OwnMessages(out, self.name)  # acknowledged, by seq
        self.presence: dict[int, tuple[str, int]] = {}
        self.status = "connecting"
        self.ws: ClientConnection | None = None
        self.synced = False
        self.listed = False  # the conversation was in this connection's `ready` pages
        self.muted: set[int] = set()  # notification settings (docs/protocol.md §12)
        self.dnd = False
        # The writer: what it wrote on this connection (in the current round), the replies
        # still due (client_msg_id, round), the round (a rewind starts a new one), and when
        # it may write again.
        self._sent: set[str] = set()
        self._due: collections.deque[tuple[Own, int]] = collections.deque()
        self._round = 0
        self._resume = 0.0
        self._wake = asyncio.Event()
        self._confirming = False
        self._confirmed = 0

    # -- what the UI reads -------------------------------------------------------------------
    def title(self) -> str:
        if self.conv["kind"] == "group":
            return f"#{self.cid} {self.conv['title']}"
        peers = [n for uid, n in self.names.items() if uid != self.me]
        return f"#{self.cid} {', '.join(peers)}"

    def toolbar(self) -> str:
        others = [uid for uid in sorted(self.names) if uid != self.me][:8]
        who = ", ".join(f"{self.names[u]} {self.presence.get(u, ('offline', 0))[0]}" for u in others)
        unsent = f" · {len(self.outbox)} unsent" if self.outbox else ""
        return f" {self.title()} · {self.status}{unsent} · {who} · ^D quits"

    def pending(self) -> list[dict[str, Any]]:
        return [
            {"client_msg_id": o.client_msg_id, "body": o.body, **({"files": o.files} if o.files else {})}
            for o in self.outbox.values()
        ]

    def name(self, uid: int | None) -> str:
        return "?" if uid is None else self.names.get(uid, f"user {uid}")

    # -- input -------------------------------------------------------------------------------
    def submit(self, body: str, client_msg_id: str | None = None, files: list[Frame] | None = None) -> None:
        own = Own(client_msg_id or uuid.uuid4().hex, body, files=files or [])
        self.outbox[own.client_msg_id] = own
        note = "" if self.synced else " (offline: sent on reconnect)"
        self.out(f"{datetime.now().astimezone():%H:%M} {self.name(self.me)}: {body}  · pending{note}")
        self._show_files(own.files)
        self._wake.set()
        self.refresh()

    def _show_files(self, files: list[Frame]) -> None:
        me = self.name(self.me)
        for file in files:
            command = f"chatd client --user {me} download {file['id']}"
            self.out(f"  [file] {file['name']} ({size_text(file['size'])}) · {command}")

    def last_own(self) -> int | None:
        return self.mine.last()

    async def _write(self, ws: ClientConnection) -> None:
        """Write the outbox to `ws` in order, each entry once per round, as it fills."""
        loop = asyncio.get_running_loop()
        while True:
            if (wait := self._resume - loop.time()) > 0:
                await asyncio.sleep(wait)
                continue
            own = next((o for o in self.outbox.values() if o.client_msg_id not in self._sent), None)
            if own is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._sent.add(own.client_msg_id)
            self._due.append((own, self._round))
            frame = {"type": "send", "id": own.client_msg_id, "conversation_id": self.cid}
            frame |= {"client_msg_id": own.client_msg_id, "body": own.body}
            if own.files:
                frame["attachments"] = [file["id"] for file in own.files]
            await ws.send(orjson.dumps(frame).decode())

    def _answered(self, client_msg_id: str) -> tuple[Own | None, bool]:
        """The write a reply answers (replies come in the order written), and whether it
        was written in the current round."""
        if all(own.client_msg_id != client_msg_id for own, _ in self._due):
            return None, False
        while True:
            own, written_in = self._due.popleft()
            if own.client_msg_id == client_msg_id:
                return own, written_in == self._round

    def _rewind(self, own: Own, delay: float) -> None:
        """Write again from `own` on after `delay`. The server refuses every send written
        after it until it comes again: their replies belong to the round that ends here.
        It comes again even if it was seen stored meanwhile (its event in the catch-up after a
        reconnect, say): that lifts the server's hold, and it is answered as a duplicate."""
        if own.client_msg_id not in self.outbox:  # every send before it is answered
            self.outbox = {own.client_msg_id: own, **self.outbox}
        self._round += 1
        self._sent.clear()
        for cmid in self.outbox:
            if cmid == own.client_msg_id:
                break
            self._sent.add(cmid)
        self._resume = max(self._resume, asyncio.get_running_loop().time() + delay)
        self._wake.set()

    # -- the connection loop -----------------------------------------------------------------
    async def run(self) -> None:
        async with Api(self.url, self.token) as api:
            history = await api.history(self.cid)
            counts = await api.receipts(self.cid, history)
            self._notify_settings(await api.call("GET", "/v1/me/notifications"))
        for event in history:
            self._message(event, counts.get(event["seq"]))
        attempt = 0
        while True:
            code = await self._connect_once()
            self.ws, self.synced = None, False
            if code == 4001:
                raise Stop("the server refused the token (revoked or invalid)", auth=True)
            if self.status == "synced":
                attempt = 0
            delay = random.uniform(0, 1) if code == 1012 and attempt == 0 else self._backoff(attempt)
            attempt += 1
            self.status = "offline"
            self.out(f"* disconnected ({code or 'no connection'}); reconnecting in {delay:.1f} s")
            self.refresh()
            await asyncio.sleep(delay)

    @staticmethod
    def _backoff(attempt: int) -> float:
        return random.uniform(0, min(30.0, 0.5 * 2**attempt))

    async def _connect_once(self) -> int | None:
        self.status = "connecting"
        try:
            async with websockets.connect(self.ws_url, max_size=2**20, open_timeout=10) as ws:
                auth = {"type": "auth", "token": self.token, "since": {str(self.cid): self.last_seq}}
                await ws.send(orjson.dumps(auth).decode())
                self.ws = ws
                self._round += 1  # a new connection: everything unacknowledged is written again
                self._sent.clear()
                self._due.clear()
                writer = asyncio.get_running_loop().create_task(self._write(ws))
                try:
                    async for raw in ws:
                        self._frame(orjson.loads(raw))
                finally:
                    writer.cancel()
                    with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                        await writer
                return ws.close_code
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        except (OSError, TimeoutError, websockets.InvalidHandshake):
            return None

    # -- frames ------------------------------------------------------------------------------
    def _frame(self, frame: Frame) -> None:
        kind = frame.get("type")
        if kind in ("ready", "conversations"):
            self._ready(frame)
        elif kind == "synced":
            self.synced, self.status = True, "synced"
            others = [uid for uid in sorted(self.names) if uid != self.me][:8]
            who = "; ".join(f"{self.name(u)} is {self.presence.get(u, ('offline', 0))[0]}" for u in others)
            self.out(f"* connected as {self.name(self.me)} · {who}")
            self._mark_read()
        elif kind == "message" and frame["conversation_id"] == self.cid:
            self._message(frame)
            self._confirm_received()
            self._mark_read()
        elif kind == "message":
            self._elsewhere(frame)
        elif kind == "notify_settings":
            self._notify_settings(frame)
        elif kind == "ack" and frame["conversation_id"] == self.cid:
            self._answered(frame["client_msg_id"])
            self._saved(frame["client_msg_id"], frame["seq"])
        elif kind == "error":
            self._error(frame)
        elif kind == "read" and frame["conversation_id"] == self.cid and frame["user_id"] != self.me:
            self.mine.read_by_peer(frame["user_id"], frame["seq"])
        elif kind == "delivered" and frame["conversation_id"] == self.cid and frame["user_id"] != self.me:
            self.mine.delivered_to_peer(frame["user_id"], frame["seq"])
        elif kind == "read_state" and frame["conversation_id"] == self.cid:
            self.read_seq = max(self.read_seq, frame["last_read_seq"])
        elif kind == "receipts" and frame["conversation_id"] == self.cid:
            self.mine.counts(frame["counts"])
        elif kind == "presence":
            self._presence(frame, announce=True)
        self.refresh()

    def _elsewhere(self, event: Frame) -> None:
        """A message in another conversation: the terminal's bell, unless muted or in
        do-not-disturb (or mine, from another device)."""
        if event["kind"] != "text" or event["sender_id"] == self.me:
            return
        if self.dnd or event["conversation_id"] in self.muted:
            return
        self.out(f"\a* new message in #{event['conversation_id']}")

    def _notify_settings(self, settings: Frame) -> None:
        self.muted, self.dnd = set(settings["muted"]), bool(settings["dnd"])

    def _ready(self, frame: Frame) -> None:
        """`ready` and the `conversations` pages after it (protocol.md §4.1)."""
        if frame["type"] == "ready":
            self.listed = False
            for entry in frame["presence"]:
                self._presence(entry, announce=False)
        for conv in frame["conversations"]:
            if conv["id"] == self.cid:
                self.listed = True
                self.read_seq = max(self.read_seq, conv["last_read_seq"])
        if not frame["more"] and not self.listed:
            raise Stop(f"you are no longer a member of #{self.cid}")

    def _message(self, event: Frame, count: Frame | None = None) -> None:
        seq = event["seq"]
        if seq <= self.last_seq:
            return
        self.last_seq = seq
        when, who = clock(event["created_at"]), self.name(event["sender_id"])
        if event["kind"] in ("edit", "delete"):
            self.mine.changed(event, when, who)
            return
        if event["kind"] != "text":
            users = ", ".join(self.name(u) for u in event.get("user_ids", []))
            verb = "added" if event["kind"] == "members_added" else "removed"
            self.out(f"{when} * {who} {verb} {users}")
            if event["kind"] == "members_removed" and self.me in event.get("user_ids", []):
                raise Stop(f"you were removed from #{self.cid}")
            asyncio.get_running_loop().create_task(self._reload_members())
            return
        cmid = event.get("client_msg_id")
        if event["sender_id"] == self.me and cmid in self.outbox:
            self._saved(cmid, seq)  # typed here: already on screen
            return
        if event["sender_id"] == self.me and seq in self.mine:
            return  # typed here and its ack came first: already on screen
        body = shown(event)
        if event["sender_id"] != self.me:
            self.out(f"{when} {who}: {body}")
            self._show_files(event.get("attachments") or [])
            return
        state = "deleted" if event.get("deleted_at") else "saved"
        own = Own(cmid or "", event["body"], seq, state, event.get("attachments") or [])
        if count and count["read_by"]:
            direct = self.conv["kind"] == "direct"
            own.state = "read" if direct else f"read by {count['read_by']} of {count['of']}"
        self.mine[seq] = own
        self.out(f"{when} {who}: {body}  · {own.state}")
        self._show_files(own.files)

    def _saved(self, client_msg_id: str, seq: int) -> None:
        own = self.outbox.pop(client_msg_id, None)
        if own is None or own.seq is not None:  # unknown, or a resend of one already shown saved
            return
        own.seq, own.state = seq, "saved"
        self.mine[seq] = own
        self.out(f"  ✓ saved: {short(own.body)}")

    def _presence(self, entry: Frame, announce: bool) -> None:
        uid, version = entry["user_id"], entry["version"]
        if uid == self.me or uid not in self.names or version <= self.presence.get(uid, ("", -1))[1]:
            return
        before = self.presence.get(uid, ("", 0))[0]
        self.presence[uid] = (entry["status"], version)
        if announce and before != entry["status"]:  # the snapshot goes in the "connected" line
            seen = f" (last seen {clock(entry['last_seen'])})" if entry.get("last_seen") else ""
            self.out(f"* {self.name(uid)} is {entry['status']}{seen}")

    def _error(self, frame: Frame) -> None:
        own, current = self._answered(str(frame.get("ref")))
        if own is None:
            self.out(f"* error {frame['code']}: {frame['message']}")
            return
        if frame["code"] == "shutting_down":
            return  # the 1012 close follows; the next connection writes it again
        if frame["code"] in RETRYABLE:
            if current:  # else written after a refused one: written again after it anyway
                self._rewind(own, frame.get("retry_after_ms", RETRY_LATER_S * 1000) / 1000)
            return
        if self.outbox.pop(own.client_msg_id, None) is None:
            return  # stored meanwhile
        self.out(f"* not sent ({frame['code']}: {frame['message']}): {short(own.body)}")

    def _confirm_received(self) -> None:
        """This device got the conversation up to last_seq: one `received` per batch of frames
        (the next loop pass), not one per message (§4.8)."""
        if self._confirming or self.ws is None:
            return
        self._confirming = True

        def confirm() -> None:
            self._confirming = False
            if self.last_seq > self._confirmed:
                self._confirmed = self.last_seq
                frame = {"type": "received", "conversation_id": self.cid, "seq": self.last_seq}
                asyncio.get_running_loop().create_task(self.send_frame(frame))

        asyncio.get_running_loop().call_soon(confirm)

    def _mark_read(self) -> None:
        if self.synced and self.ws is not None and self.last_seq > self.read_seq:
            self.read_seq = self.last_seq
            frame = {"type": "read", "conversation_id": self.cid, "seq": self.last_seq}
            asyncio.get_running_loop().create_task(self.send_frame(frame))

    async def send_frame(self, frame: Frame) -> None:
        if self.ws is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await self.ws.send(orjson.dumps(frame).decode())

    async def _reload_members(self) -> None:
        with contextlib.suppress(Exception):
            async with Api(self.url, self.token) as api:
                self.names = await api.members(self.cid)
