"""One client WebSocket's outbound queue, and the close codes (docs/protocol.md §6)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketState

from chatd import metrics

log = logging.getLogger("chatd.ws")

CLOSE_UNAUTHORIZED = 4001
CLOSE_AUTH_TIMEOUT = 4002
CLOSE_SLOW_CONSUMER = 4008
CLOSE_TOO_MANY_CONNECTIONS = 4009
CLOSE_SERVICE_RESTART = 1012
CLOSE_UNAVAILABLE = 1011

Event = dict[str, Any]
# A queued frame: its text, or (text, since, histogram) to observe time.time() - since once written.
Queued = str | tuple[str, float, Any] | None


def dumps(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


class Connection:
    """The outbound side of one socket: an ordered queue written by a task that exists only
    while frames are queued (issue 6: idle connections are counted in thousands per worker).

    The session (sessions/) decides what is sent; this class only queues, writes, applies the
    slow-consumer limit (close 4008) and closes after everything already queued.
    """

    __slots__ = (
        "_close_reason",
        "_done",
        "_frames",
        "_queue_limit",
        "_waiters",
        "_writer",
        "close_code",
        "id",
        "token_hash",
        "user_id",
        "websocket",
    )

    def __init__(self, websocket: WebSocket, user_id: int, token_hash: bytes, queue_limit: int) -> None:
        self.websocket = websocket
        self.user_id = user_id
        self.token_hash = token_hash
        self.id = secrets.token_hex(6)
        self.close_code: int | None = None
        self._frames: deque[Queued] | None = None  # None: nothing queued
        self._queue_limit = queue_limit
        self._close_reason = ""
        self._writer: asyncio.Task[None] | None = None  # runs only while frames are queued
        self._done = False  # the writer has closed the socket or lost it
        self._waiters: list[asyncio.Future[None]] = []  # drained() and wait_closed() callers

    def __repr__(self) -> str:
        return f"<Connection user={self.user_id}>"

    @property
    def queued(self) -> int:
        return len(self._frames) if self._frames is not None else 0

    @property
    def congested(self) -> bool:
        """More than half the queue is unwritten: `drained()` would wait."""
        return self._frames is not None and len(self._frames) > self._queue_limit // 2

    # -- outbound ------------------------------------------------------------------------
    def send(self, frame: dict[str, Any], since: float = 0.0, latency: Any = None) -> None:
        try:
            text = dumps(frame)
        except orjson.JSONEncodeError:  # a bug: answer with an error, never lose the socket
            log.exception("reply cannot be encoded", extra={"user_id": self.user_id})
            text = dumps({"type": "error", "code": "internal", "message": "internal error"})
        self.send_text(text, since, latency)

    def send_text(self, text: str, since: float = 0.0, latency: Any = None) -> None:
        """Queue `text`; with `latency` (a histogram), observe the time from `since` to its write."""
        if self.close_code is not None:
            return
        if self._frames is not None and len(self._frames) >= self._queue_limit:
            self.slow_consumer()
            return
        self._enqueue(text if latency is None else (text, since, latency))

    @property
    def queue_limit(self) -> int:
        return self._queue_limit

    def slow_consumer(self) -> None:
        """Close 4008: more than the queue's bound waits for this client."""
        log.warning("slow consumer", extra={"user_id": self.user_id})
        metrics.SLOW_CONSUMERS.inc()
        self.close(CLOSE_SLOW_CONSUMER, "slow consumer: reconnect and catch up")

    def _enqueue(self, text: Queued) -> None:
        if self._frames is None:
            self._frames = deque()
        self._frames.append(text)
        if self._writer is None and not self._done:
            self._writer = asyncio.create_task(self._write_loop())

    def close(self, code: int, reason: str = "") -> None:
        """Close after everything already queued has been written."""
        if self.close_code is not None:
            return
        self.close_code = code
        self._close_reason = reason
        self._enqueue(None)

    async def _write_loop(self) -> None:
        ws = self.websocket
        frames = self._frames
        try:
            while frames:
                text = frames.popleft()
                if text is None:
                    if ws.application_state == WebSocketState.CONNECTED:
                        await ws.close(self.close_code or 1000, self._close_reason)
                    self._finish_writing()
                    return
                if isinstance(text, tuple):
                    await ws.send_text(text[0])
                    text[2].observe(time.time() - text[1])
                else:
                    await ws.send_text(text)
                if self._waiters and len(frames) <= self._queue_limit // 2:
                    self._wake()
        except Exception:  # the peer went away; the reader notices and cleans up
            self.close_code = self.close_code or 1006
            self._finish_writing()
            return
        # Nothing left to write: drop the queue and this task until the next frame.
        self._frames = None
        self._writer = None
        self._wake()

    def _finish_writing(self) -> None:
        self._done = True
        self._frames = None
        self._writer = None
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    async def drained(self) -> None:
        """Wait until the client has taken at least half of the queue (catch-up backpressure)."""
        while (
            self._frames is not None
            and len(self._frames) > self._queue_limit // 2
            and self.close_code is None
            and not self._done
        ):
            await self._wait()

    async def wait_closed(self) -> None:
        """Wait until the socket is closed (or lost) and nothing more will be written."""
        while not self._done:
            await self._wait()

    async def finish(self) -> None:
        """Stop writing (the socket is gone or closing) and wait for the writer to end."""
        if self.close_code is None:
            self.close_code = 1000
            self._enqueue(None)
        writer = self._writer
        if writer is None:
            self._done = True
            self._wake()
            return
        try:
            await asyncio.wait_for(asyncio.shield(writer), timeout=5)
        except (TimeoutError, asyncio.CancelledError):
            writer.cancel()
            self._finish_writing()
