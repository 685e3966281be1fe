"""One client connection's life, from the first frame to the close (state rules: state.py).

The transport (ws.py) hands over decoded frames; the session decides what each one does in
the current state, delivers the hub's events (it is the hub's Subscriber) and chooses how the
socket closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from chatd import frames, metrics
from chatd.accounts import Identity
from chatd.connection import Connection, dumps
from chatd.errors import ChatdError, Code
from chatd.sessions import state, sync
from chatd.sessions.following import Following
from chatd.sessions.limits import PresenceFrames, TypingFrames
from chatd.sessions.sends import SendPipeline
from chatd.sessions.state import NEXT, State
from chatd.sessions.streams import Streams
from chatd.subscriber import Event

if TYPE_CHECKING:
    from chatd.confirms import Failures
    from chatd.runtime import Runtime

log = logging.getLogger("chatd.ws")
# The inbox holds at most a send window of frames and this many bytes of them.
INBOX_BYTES = 1 << 20


def send_window(configured: int, queue_frames: int) -> int:
    """The window a connection gets: a whole window's replies and echoes (two frames a send)
    must fit in the half of the send queue that may be free when it is taken, or a client that
    reads would be closed 4008 for a burst the server itself queued."""
    return max(1, min(configured, (queue_frames - queue_frames // 2 - 1) // 2))


class Session:
    # Thousands of idle sessions per worker (issue 6): slots, and an inbox only while in use.
    __slots__ = (
        "_confirmed",
        "_confirming",
        "_deferred",
        "_inbox",
        "_inbox_bytes",
        "_inbox_room",
        "_presence",
        "_processor",
        "_started",
        "_typing",
        "conn",
        "following",
        "runtime",
        "sends",
        "share_read_state",
        "state",
        "streams",
    )

    def __init__(self, runtime: Runtime, websocket: WebSocket, identity: Identity) -> None:
        self.runtime = runtime
        self.state = State.AUTHENTICATING
        settings = runtime.settings
        self.conn = Connection(websocket, identity.user_id, identity.token_hash, settings.send_queue_frames)
        self.streams = Streams(self.conn, self._left)
        window = send_window(settings.send_window, settings.send_queue_frames)
        self.sends = SendPipeline(self.conn, runtime.messaging, window, runtime.in_flight)
        self.share_read_state = identity.share_read_state
        self._deferred: list[tuple[dict[str, Any], int]] = []  # conversations added while syncing
        # Per-connection limits on state frames (protocol.md §4.9, §4.10), made on first use.
        self._typing: TypingFrames | None = None
        self._presence: PresenceFrames | None = None
        self.following = Following(self)
        self._started = time.perf_counter()
        # Frames read but not processed yet (frame or decode error, ref, time read, size).
        self._inbox: deque[tuple[frames.Frame | ChatdError, Any, float, int]] | None = None
        self._inbox_bytes = 0
        self._inbox_room: asyncio.Event | None = None
        self._processor: asyncio.Task[None] | None = None  # runs only while the inbox holds frames
        self._confirmed: dict[int, int] | None = None  # conversation -> highest seq confirmed
        self._confirming: asyncio.Future[Failures] | None = None  # the last confirmation's batch

    def __repr__(self) -> str:
        return f"<Session user={self.user_id} {self.state.value}>"

    def _enter(self, new: State) -> None:
        if new is not self.state:
            assert new in NEXT[self.state], f"{self.state} -> {new}"
            self.state = new

    # -- Subscriber (called by the hub) --------------------------------------------------
    @property
    def id(self) -> str:
        return self.conn.id

    @property
    def user_id(self) -> int:
        return self.conn.user_id

    @property
    def token_hash(self) -> bytes:
        return self.conn.token_hash

    @property
    def close_code(self) -> int | None:
        return self.conn.close_code

    @property
    def queued(self) -> int:
        return self.conn.queued

    @property
    def conversations(self) -> Collection[int]:
        return self.streams.cursor.keys()

    @property
    def followed(self) -> Collection[int]:
        return self.following.users

    def deliver(self, cid: int, seq: int, text: str, event: Event) -> None:
        if self.state in (State.SYNCING, State.LIVE):
            self.streams.deliver(cid, seq, text, event)

    def broadcast(self, text: str, event: Event) -> None:
        if self.state in (State.SYNCING, State.LIVE):
            if event["type"] == "presence" and not self.following.took_part(event):
                return
            self.streams.state(text, event)

    def presence(self, text: str, event: Event) -> None:
        if self.state in (State.SYNCING, State.LIVE):
            self.streams.state(text, event)

    def members_changed(self, cid: int) -> None:
        if self.state in (State.SYNCING, State.LIVE):
            self.following.refresh()

    def notice(self, payload: dict[str, Any]) -> None:
        op = payload.get("op")
        if op == "conversation_added":
            if self.state is State.LIVE:
                self.runtime.tasks.spawn(self._follow(payload["conversation"], payload["since"]))
            elif self.state is State.SYNCING:  # `ready` is not out yet: follow it afterwards, in order
                self._deferred.append((payload["conversation"], payload["since"]))
        elif op == "read_state" and payload.get("origin") != self.id:
            frame = {
                "type": "read_state",
                "conversation_id": payload["conversation_id"],
                "last_read_seq": payload["last_read_seq"],
            }
            self.broadcast(dumps(frame), frame)  # held until `synced`, like other state
        elif op == "settings":
            self.share_read_state = bool(payload["share_read_state"])
        elif op == "notify_settings":  # mutes, do-not-disturb, preview: to every device (notify.py)
            frame = {"type": "notify_settings", **{k: v for k, v in payload.items() if k != "op"}}
            self.broadcast(dumps(frame), frame)
        elif op == "revoke" and self.token_hash.hex() in payload.get("tokens", [payload.get("token")]):
            self.close(*state.REVOKED)  # ("token" alone: from a worker of an earlier release)

    def close(self, code: int, reason: str = "") -> None:
        """Close after everything already queued (DRAINING until the socket is gone)."""
        if self.state is not State.CLOSED:
            self._enter(State.DRAINING)
        self.conn.close(code, reason)

    async def wait_closed(self) -> None:
        await self.conn.wait_closed()

    def fail(self, exc: BaseException, what: str) -> None:
        self.close(*state.close_for_failure(exc, what, self.user_id))

    async def _follow(self, conv: dict[str, Any], after: int) -> None:
        try:
            await sync.follow(self, conv, after)
        except Exception as exc:
            self.fail(exc, "follow failed")

    def _left(self, cid: int) -> None:
        if self._typing is not None:
            self._typing.left(cid)
        self.runtime.hub.detach(self, [cid])

    # -- AUTHENTICATING -> SYNCING -> LIVE -----------------------------------------------
    async def start(self, since: dict[int, int]) -> bool:
        """Subscribe, count for presence, sync; False if the session closed meanwhile."""
        rt = self.runtime
        self._enter(State.SYNCING)  # from here notices can arrive: they are held, not lost
        await rt.hub.add_connection(self)
        # A logout between the token check and that subscription published its revoke to
        # nobody: check again, now that a revoke would reach this session.
        if not await rt.accounts.is_live(self.token_hash):
            self.conn.send(frames.error(ChatdError(Code.UNAUTHORIZED, "invalid or revoked token")))
            self.close(state.REVOKED.code, Code.UNAUTHORIZED)
            return False
        await rt.presence.connect(self.conn)
        await sync.sync(self, since)
        if self.state is not State.SYNCING:
            return False
        self._enter(State.LIVE)
        deferred, self._deferred = self._deferred, []
        for conv, after in deferred:
            await self._follow(conv, after)  # skips what `ready` already included
        return self.reading

    async def end(self) -> None:
        """The socket is closing or gone: unsubscribe, stop counting for presence, flush."""
        if self.state is not State.DRAINING:
            self._enter(State.DRAINING)
        if self._processor is not None:
            self._processor.cancel()  # sends already in the window still commit
        if self._presence is not None:
            self._presence.stop()
        self.following.stop()
        rt = self.runtime
        rt.hub.remove_connection(self)
        await rt.presence.disconnect(self.conn)
        await self.conn.finish()
        self._enter(State.CLOSED)

    @property
    def reading(self) -> bool:
        return self.state.reads_frames and self.conn.close_code is None

    def disconnected(self, code: int) -> None:
        """The peer closed (or the socket was lost)."""
        self.conn.close_code = self.conn.close_code or code
        self._enter(State.DRAINING)

    # -- LIVE: frames ----------------------------------------------------------------------
    async def take(self, frame: frames.Frame | ChatdError, ref: Any, size: int) -> None:
        """One frame read from the socket (or the error it decoded to), processed in order.

        Sends go into the send window and are answered later, in order; any other frame is
        processed once every earlier send is answered, so replies keep the order of the
        frames (docs/protocol.md §7). What cannot be processed yet waits in the inbox, and the
        reader goes on reading (the keepalive's pongs come behind those frames) until the
        inbox is full: then this returns only once there is room again (backpressure)."""
        received = time.time()
        if self._processor is None:  # nothing waits: process it now if it can be
            if isinstance(frame, frames.Send):
                if not self.conn.congested and self.sends.offer(frame, ref, received, self._refusal()):
                    return
            elif not self.sends.unacked:
                await self._handle(frame, ref)
                return
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append((frame, ref, received, size))
        self._inbox_bytes += size
        if self._processor is None:
            self._processor = asyncio.create_task(self._process())
        while self._inbox_full() and self.reading:
            await self._wait_inbox()

    def _inbox_full(self) -> bool:
        held = len(self._inbox) if self._inbox is not None else 0
        return held >= self.sends.window or self._inbox_bytes >= INBOX_BYTES

    async def _wait_inbox(self) -> None:
        if self._inbox_room is None:
            self._inbox_room = asyncio.Event()
        await self._inbox_room.wait()

    async def _process(self) -> None:
        inbox = self._inbox
        try:
            while inbox and self.reading:
                frame, ref, received, size = inbox[0]
                if isinstance(frame, frames.Send):
                    await self.conn.drained()
                    while not self.sends.offer(frame, ref, received, self._refusal()):
                        await self.sends.room()
                else:
                    await self.sends.settled()
                    await self._handle(frame, ref)
                inbox.popleft()
                self._inbox_bytes -= size
                if self._inbox_room is not None:
                    self._inbox_room.set()
                    self._inbox_room = None
        finally:
            self._processor = None
            self._inbox = inbox or None  # dropped once empty
            if self._inbox_room is not None:
                self._inbox_room.set()
                self._inbox_room = None

    def _refusal(self) -> ChatdError | None:
        if self.runtime.draining:
            return ChatdError(Code.SHUTTING_DOWN, "this worker is restarting; resend after reconnect")
        return None

    async def _handle(self, frame: frames.Frame | ChatdError, ref: Any) -> None:
        try:
            if isinstance(frame, ChatdError):
                raise frame
            if isinstance(frame, frames.Received):
                await self._on_received(frame, ref)
                return
            if self._confirming is not None:  # earlier confirmations take effect first (§7)
                await asyncio.wait([self._confirming])  # (not cancelled with this task)
                self._confirming = None
            if isinstance(frame, frames.Read):
                await self._on_read(frame, ref)
            elif isinstance(frame, frames.Status):
                await self._on_presence(frame.idle)
            elif isinstance(frame, (frames.Edit, frames.Delete)):
                ack = await self.runtime.amends.apply(self.user_id, frame)
                self.conn.send({**ack, "ref": ref} if ref is not None else ack)
            elif isinstance(frame, frames.Ping):
                self.conn.send({"type": "pong"})
            elif isinstance(frame, frames.Typing):
                await self._on_typing(frame)
            else:
                raise ChatdError(Code.BAD_REQUEST, "already authenticated")
        except ChatdError as exc:
            self.conn.send(frames.error(exc, ref))
        except Exception as exc:
            self.conn.send(frames.error(state.frame_failure(exc, self.user_id), ref))

    async def _on_received(self, frame: frames.Received, ref: Any) -> None:
        """No reply: one a batch of a busy conversation, the hot path. Not above what this
        connection confirmed: nothing to do. Up to what it was given: into the worker's next
        batch (confirms.py). Beyond that: checked in Postgres at once (Receipts.received)."""
        cid, seq = frame.conversation_id, frame.seq
        confirmed = self._confirmed if self._confirmed is not None else {}
        if seq <= confirmed.get(cid, 0):
            return
        known = self.streams.cursor.get(cid, 0)
        if seq > known:
            await self.runtime.receipts.received(self.user_id, cid, seq, known)
        else:
            done = self.runtime.confirms.submit(self.id, self.user_id, cid, seq, known)
            done.add_done_callback(lambda f: self._confirm_failed(f.result().get((self.id, cid)), cid, ref))
            self._confirming = done
        confirmed[cid] = seq
        self._confirmed = confirmed

    def _confirm_failed(self, exc: BaseException | None, cid: int, ref: Any) -> None:
        if exc is None:
            return
        if self._confirmed is not None:
            self._confirmed.pop(cid, None)  # the client may confirm it again
        failure = exc if isinstance(exc, ChatdError) else state.frame_failure(exc, self.user_id)
        self.conn.send(frames.error(failure, ref))

    async def _on_read(self, frame: frames.Read, ref: Any) -> None:
        cid = frame.conversation_id
        metrics.READ_MARKS.inc()
        pointer = await self.runtime.receipts.mark(
            self.user_id, cid, frame.seq, self.streams.cursor.get(cid, 0), self.id
        )
        reply: dict[str, Any] = {"type": "read_state", "conversation_id": cid, "last_read_seq": pointer}
        if ref is not None:
            reply["ref"] = ref
        self.conn.send(reply)

    async def _on_presence(self, idle: bool) -> None:
        """Mark this connection idle or active. Past CHATD_PRESENCE_FRAME_RATE_LIMIT frames a
        window, the last status asked for is applied when the window ends (§4.9)."""
        if self._presence is None:
            limit = self.runtime.settings.presence_frame_rate_limit
            self._presence = PresenceFrames(limit, self._set_idle, self.runtime.tasks.spawn)
        await self._presence.take(idle)

    async def _set_idle(self, idle: bool) -> None:
        if self.reading:  # a deferred status of a connection that closed meanwhile is moot
            await self.runtime.presence.set_idle(self.conn, idle)

    async def _on_typing(self, frame: frames.Typing) -> None:
        """Relay "typing" to the conversation's connections: never stored, at most one a second
        per connection and conversation and CHATD_TYPING_FRAME_RATE_LIMIT a window per
        connection, and only once the user took part in it (§4.9: typing shows activity).
        Other frames are dropped without a reply."""
        cid = frame.conversation_id
        if cid not in self.streams.cursor:  # a session follows exactly the user's conversations
            raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation")
        typing = self._typing or TypingFrames(self.runtime.settings.typing_frame_rate_limit)
        self._typing = typing
        if not typing.allow(cid):
            return
        if not await typing.took_part(cid, lambda: self.runtime.conversations.took_part(cid, self.user_id)):
            return
        event = {"type": "typing", "conversation_id": cid, "user_id": self.user_id}
        self.runtime.hub.publish_state(event, key=("typing", cid, self.user_id))

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self._started, 3)
