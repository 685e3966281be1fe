"""uvicorn's WebSocket protocol with end-to-end flow control and a keepalive that counts progress.

Catch-up is paced by the reader (docs/protocol.md §4.1), but the transport's own backpressure
stops at the worker's socket: kernel buffers, nginx and the client's own buffers hold megabytes
more, and a keepalive ping written behind them reached a slow reader only after it had read all
of that. It was closed for "missing" pongs while it was still reading (issue 19 item 18). So:

- **Window.** Pings go out after every ``PING_STEP`` bytes of data frames, and a data frame is
  written only while less than ``window`` bytes are unconfirmed: a pong confirms everything
  written before its ping, so at most about ``window`` bytes ever wait ahead of a ping, whatever
  the buffers between. A writer that is ahead waits in ``send`` (``Connection``'s writer task),
  so its queue fills and the catch-up waits for the reader (sessions/sync.py). Not while this
  side has stopped reading (below): the pongs would wait behind the client's own frames, and
  a client that waits for acks before it reads on would never get them.
- **Keepalive.** A ping every ``ping_interval`` when none is outstanding; the connection is
  closed (1011 ``keepalive ping timeout``) only when a ping has been outstanding for
  ``ping_timeout`` *and* no pong at all came back in that time. A reader that takes one
  ``PING_STEP`` of data per timeout answers some ping, and stays.
- **Writing now.** ``write_texts`` (an ASGI extension in the scope, ``WRITE_TEXTS``) frames
  text messages and hands them to the transport in one write, without a task or an ASGI
  message per frame: ``Connection`` uses it while nothing waits in its queue and the window
  and the transport have room, and queues behind ``send`` otherwise (same order, same window).
- **Reading.** uvicorn stops reading the socket as soon as one message waits for the
  application; a session that is syncing (or has a full inbox) takes none for a while, and the
  client's pongs would wait behind its own frames. Here reading goes on until ``RECEIVE_BUFFER``
  bytes of messages wait, so pongs keep arriving.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent

from chatd.connection import WRITE_TEXTS
from chatd.wire import WebSocketProtocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from websockets.frames import Frame
    from websockets.http11 import Request

PING_STEP = 4096  # bytes of data frames between two pings
RECEIVE_BUFFER = 256 * 1024  # bytes of received messages waiting for the application
_FIN_TEXT = 0x81  # FIN bit and the text opcode: one unfragmented text frame


class _Ping(NamedTuple):
    payload: bytes
    position: int  # data bytes written before it
    sent_at: float


def _size(message: ASGISendEvent) -> int:
    """Bytes of the frame's payload on the wire (a text's UTF-8, not its characters)."""
    data: Any = message.get("text") or message.get("bytes") or b""  # ASGI types these loosely
    if isinstance(data, str):
        return len(data) if data.isascii() else len(data.encode())
    return len(data)


class FlowControlledProtocol(WebSocketProtocol):
    """Configured by ``protocol_class``: ``window`` is CHATD_WS_WINDOW_BYTES."""

    window = 256 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._written = 0  # data bytes handed to the transport
        self._confirmed = 0  # of those, bytes the client has read (a later ping was answered)
        self._pinged_at = 0  # `_written` when the last ping went out
        self._pings: deque[_Ping] = deque()  # outstanding, oldest first
        self._counter = 0
        self._last_pong = 0.0
        self._room = asyncio.Event()  # set when the window may have room
        self._waiting = 0  # bytes of received messages the application has not taken
        self._sizes: deque[int] = deque()  # of each of those, in order

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            extensions: Any = self.scope.get("extensions")  # ASGI types them as plain dicts
            extensions[WRITE_TEXTS] = self.write_texts

    # -- writing ---------------------------------------------------------------------------
    def write_texts(self, texts: Sequence[str]) -> int:
        """Write the first of `texts` that may go now, in one transport write; how many went.

        None may go before the handshake's answer, after a close, while the transport's buffer
        is over its high-water mark (uvicorn's ``writable``) or while the window is full; the
        caller then sends the rest through ``send``, which waits for room. Frames are built here
        without websockets' per-frame objects when no extension (compression) is in use."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.initial_response is not None
            or self._closing
            or not self.writable.is_set()
        ):
            return 0
        plain = not self.conn.extensions
        parts: list[bytes] = []
        count = 0
        for text in texts:
            if self._written - self._confirmed >= self.window and not self.read_paused:
                break
            data = text.encode()
            if plain:
                size = len(data)
                if size < 126:
                    parts.append(bytes((_FIN_TEXT, size)))
                elif size < 65536:
                    parts.append(struct.pack("!BBH", _FIN_TEXT, 126, size))
                else:
                    parts.append(struct.pack("!BBQ", _FIN_TEXT, 127, size))
                parts.append(data)
            else:
                self.conn.send_text(data)
                parts.extend(self.conn.data_to_send())
            count += 1
            self._written += len(data)
        if parts:
            self.transport.write(b"".join(parts))
            if self._written - self._pinged_at >= PING_STEP and not self.read_paused:
                self._ping()
        return count

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] != "websocket.send":
            await super().send(message)
            return
        while self._written - self._confirmed >= self.window and not (self._closing or self.read_paused):
            if self._pinged_at < self._written:  # written while pings were not sent (below)
                self._ping()
            self._room.clear()
            await self._room.wait()
        await super().send(message)
        self._written += _size(message)
        # No pings while this side does not read: their pongs could not be seen, and they
        # would pile up unanswered.
        if self._written - self._pinged_at >= PING_STEP and not self.read_paused:
            self._ping()

    @property
    def _closing(self) -> bool:
        return self.disconnected or self.close_sent or self.transport.is_closing()

    def _ping(self) -> None:
        if self._closing:
            return
        self._counter = (self._counter + 1) & 0xFFFFFFFF
        payload = struct.pack("!I", self._counter)
        self._pings.append(_Ping(payload, self._written, self.loop.time()))
        self._pinged_at = self._written
        self.conn.send_ping(payload)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self._arm()

    def handle_pong(self, event: Frame) -> None:
        payload = bytes(event.data)
        if not any(ping.payload == payload for ping in self._pings):
            return  # unsolicited, or already confirmed by a later one
        while self._pings:  # a pong answers its ping and every one before it
            ping = self._pings.popleft()
            self._confirmed = max(self._confirmed, ping.position)
            if ping.payload == payload:
                break
        self._last_pong = self.loop.time()
        self._room.set()
        if not self._pings and self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None

    # -- keepalive -------------------------------------------------------------------------
    def start_keepalive(self) -> None:
        if self.ping_interval is not None and self.ping_interval > 0:
            self.ping_timer = self.loop.call_later(self.ping_interval, self._tick)

    def _tick(self) -> None:
        self.ping_timer = None
        if self._closing:
            return
        if not self._pings:
            self._ping()
        assert self.ping_interval is not None
        self.ping_timer = self.loop.call_later(self.ping_interval, self._tick)

    def _deadline(self) -> float:
        """When the connection counts as dead if nothing more comes back."""
        assert self.ping_timeout is not None
        return max(self._pings[0].sent_at, self._last_pong) + self.ping_timeout

    def _arm(self) -> None:
        if self.pong_timer is None and self._pings and self.ping_timeout is not None:
            self.pong_timer = self.loop.call_at(self._deadline(), self._expire)

    def _expire(self) -> None:
        self.pong_timer = None
        if not self._pings or self._closing:
            return
        if self.loop.time() < self._deadline():  # a pong came meanwhile: progress, not death
            self._arm()
            return
        self._pings.clear()
        self.keepalive_timeout()

    def stop_keepalive(self) -> None:
        super().stop_keepalive()
        self._pings.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._room.set()  # a waiting `send` finds the connection gone

    # -- reading ---------------------------------------------------------------------------
    def send_receive_event_to_app(self) -> None:
        size = sum(len(part) for part in self.frames)
        queued = self.queue.qsize()
        paused = self.read_paused
        self.read_paused = True  # uvicorn would stop reading for this one message
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused
        if self.queue.qsize() > queued and not self.close_sent:  # queued, not refused (UTF-8)
            self._sizes.append(size)
            self._waiting += size
        if not self.read_paused and self._waiting >= RECEIVE_BUFFER:
            self.read_paused = True
            self.transport.pause_reading()
            self._room.set()  # the client's pongs wait behind what is not read now: see `send`

    async def receive(self) -> ASGIReceiveEvent:
        message = await self.queue.get()
        if message["type"] == "websocket.receive":
            self._waiting -= self._sizes.popleft()
        if self.read_paused and self._waiting < RECEIVE_BUFFER // 2:
            self.read_paused = False
            self.transport.resume_reading()
        return message


def protocol_class(window: int) -> type[FlowControlledProtocol]:
    """The protocol class for uvicorn.Config(ws=...), with this worker's window."""
    return type("ChatdWebSocketProtocol", (FlowControlledProtocol,), {"window": window})
