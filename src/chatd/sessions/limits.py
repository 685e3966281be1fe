"""Per-connection limits on state frames (`presence`, `typing`): what one socket may make the
server publish, whatever the number of its user's conversations (docs/protocol.md §4.9, §4.10)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("chatd.ws")
WINDOW_S = 10.0  # CHATD_PRESENCE_FRAME_RATE_LIMIT and CHATD_TYPING_FRAME_RATE_LIMIT count per this
TYPING_INTERVAL_S = 1.0  # per conversation; receivers show "typing" for 5 s after the last one


class Window:
    """At most `limit` actions per fixed window of WINDOW_S, starting at the first action."""

    __slots__ = ("count", "limit", "start")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.start = -WINDOW_S
        self.count = 0

    def take(self, now: float) -> bool:
        """Count one action at `now` (monotonic); False if the window is full."""
        if now - self.start >= WINDOW_S:
            self.start, self.count = now, 0
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def ends(self) -> float:
        return self.start + WINDOW_S


class TypingFrames:
    """Which `typing` frames of a connection are relayed: one a second per conversation,
    `limit` a window in all, and only in conversations the user took part in (a positive
    answer is remembered until the session leaves the conversation)."""

    __slots__ = ("_at", "_took_part", "_window")

    def __init__(self, limit: int) -> None:
        self._window = Window(limit)
        self._at: dict[int, float] = {}  # conversation -> last relayed
        self._took_part: set[int] = set()

    def allow(self, cid: int) -> bool:
        now = time.monotonic()
        if now - self._at.get(cid, -TYPING_INTERVAL_S) < TYPING_INTERVAL_S or not self._window.take(now):
            return False
        self._at[cid] = now
        return True

    async def took_part(self, cid: int, check: Callable[[], Awaitable[bool]]) -> bool:
        if cid not in self._took_part:
            if not await check():
                return False
            self._took_part.add(cid)
        return True

    def left(self, cid: int) -> None:
        """Added back later, the user takes part anew (§4.9)."""
        self._took_part.discard(cid)


class PresenceFrames:
    """A connection's `presence` frames: `limit` a window are applied at once; past it the last
    status asked for is applied when the window ends, so the connection always ends up in the
    status it asked for last."""

    __slots__ = ("_apply", "_deferred", "_spawn", "_timer", "_window")

    def __init__(
        self,
        limit: int,
        apply: Callable[[bool], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._window = Window(limit)
        self._apply = apply
        self._spawn = spawn
        self._deferred: bool | None = None  # idle? asked past the limit
        self._timer: asyncio.TimerHandle | None = None

    async def take(self, idle: bool) -> None:
        if self._deferred is not None:
            self._deferred = idle
            return
        now = time.monotonic()
        if self._window.take(now):
            await self._apply(idle)
            return
        self._deferred = idle
        self._timer = asyncio.get_running_loop().call_later(self._window.ends() - now, self._due)

    def _due(self) -> None:
        self._timer = None
        idle, self._deferred = self._deferred, None
        if idle is not None:
            self._window.take(time.monotonic())  # it opens the next window
            self._spawn(self._apply_later(idle))

    async def _apply_later(self, idle: bool) -> None:
        try:
            await self._apply(idle)
        except Exception:  # no frame to answer: the client's next change corrects it
            log.info("deferred presence not applied", exc_info=True)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
