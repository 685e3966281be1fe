"""The worker's background tasks: who owns them (the runtime) and stopping them for good."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

Spawn = Callable[[Coroutine[Any, Any, Any]], None]

RECANCEL_S = 0.5


async def cancel(*tasks: asyncio.Task[object] | None) -> None:
    """Cancel `tasks` and wait until each has ended. A cancellation can be swallowed inside a
    library call (seen in redis-py while a worker stopped during its first Redis round trip):
    the loop then goes on and a single `cancel()` + `await` waits for ever, so a task still
    running is cancelled again."""
    pending = {task for task in tasks if task is not None}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)


class Background:
    """Fire-and-forget tasks of one worker (a gap fill, a delayed count push, an unsubscribe):
    the runtime owns them and cancels what is left when it stops; everything else only gets
    `spawn`."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        await cancel(*self._tasks)
