"""Stopping background tasks for good."""

from __future__ import annotations

import asyncio

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
