"""Pipelined sends: the reader keeps reading while a connection's sends are in flight.

Up to `window` sends of one connection are unacknowledged at once (CHATD_SEND_WINDOW). They
are committed in groups: whatever arrived while the previous group was committing goes to
Messaging.send_many together, so they share one group commit and one Redis pipeline. One
group at a time per connection, and one statement per group, so a later send always gets the
later seq, and replies (`ack` or `error`) are queued in send order. A send refused for the rate
limit (or a failed commit) holds every later send of the connection until it is sent again
(messaging.Hold), so a client that resends in order keeps its order. Past the window, sends
wait in the session's inbox (session.py), and past that the socket is not read: backpressure,
never a close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatd import frames, metrics
from chatd.connection import Connection
from chatd.errors import ChatdError
from chatd.messaging import Hold, Messaging, Outgoing
from chatd.sessions.state import frame_failure


@dataclass(slots=True)
class Pending:
    frame: frames.Send
    ref: Any
    received: float  # time.time() when read, for the ack latency
    refusal: ChatdError | None  # answered in order without being stored (a draining worker)


class SendPipeline:
    __slots__ = (
        "_conn",
        "_hold",
        "_in_flight",
        "_messaging",
        "_slot",
        "_task",
        "_unacked",
        "_waiting",
        "window",
    )

    def __init__(
        self,
        conn: Connection,
        messaging: Messaging,
        window: int,
        in_flight: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        self._conn = conn
        self._messaging = messaging
        self.window = window
        self._in_flight = in_flight  # the worker's drain waits for sends inside it
        self._waiting: list[Pending] = []  # read, not yet handed to Messaging
        self._unacked = 0  # read and not yet answered
        self._task: asyncio.Task[None] | None = None  # runs only while sends are unanswered
        self._slot: asyncio.Event | None = None  # set when a slot frees or all are answered
        self._hold = Hold()  # a refused send holds the later ones until it is sent again

    @property
    def unacked(self) -> int:
        return self._unacked

    def offer(self, frame: frames.Send, ref: Any, received: float, refusal: ChatdError | None) -> bool:
        """Take one send if the window has room (its reply comes later, in send order)."""
        if self._unacked >= self.window:
            return False
        self._unacked += 1
        self._waiting.append(Pending(frame, ref, received, refusal))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return True

    async def room(self) -> None:
        """Wait until the window has room."""
        while self._unacked >= self.window:
            await self._wait()

    async def settled(self) -> None:
        """Wait until every send taken so far is answered (frames after them keep their order)."""
        while self._unacked:
            await self._wait()

    async def _wait(self) -> None:
        if self._slot is None:
            self._slot = asyncio.Event()
        await self._slot.wait()

    def _answered(self) -> None:
        self._unacked -= 1
        if self._slot is not None:
            self._slot.set()
            self._slot = None

    async def _run(self) -> None:
        try:
            with self._in_flight():
                while self._waiting:
                    group, self._waiting = self._waiting, []
                    await self._commit(group)
        finally:
            self._task = None

    async def _commit(self, group: list[Pending]) -> None:
        stored = [p for p in group if p.refusal is None]
        outgoing: list[Outgoing] = [
            (p.frame.conversation_id, p.frame.client_msg_id, p.frame.body, p.frame.attachments)
            for p in stored
        ]
        try:
            results = await self._messaging.send_many(self._conn.user_id, outgoing, self._hold)
        except Exception as exc:  # a bug below: every send of the group gets the same answer
            results = [exc] * len(stored)
        outcome = dict(zip(map(id, stored), results, strict=True))
        for pending in group:
            result = outcome.get(id(pending), pending.refusal)
            self._reply(pending, result)
            self._answered()

    def _reply(self, pending: Pending, result: dict[str, Any] | BaseException | None) -> None:
        if isinstance(result, dict):
            if pending.ref is not None:
                result["ref"] = pending.ref
            latency = metrics.ACK_LATENCY if metrics.ENABLED else None
            self._conn.send(result, pending.received, latency)
            return
        error = (
            result
            if isinstance(result, ChatdError)
            else frame_failure(result or Exception(), self._conn.user_id)
        )
        self._conn.send(frames.error(error, pending.ref))
