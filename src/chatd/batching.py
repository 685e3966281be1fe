"""Coalesce concurrent calls into one round trip (group commit, pipelined Redis calls).

A batch starts on the next turn of the event loop as soon as one of `concurrency` slots is free.
Items submitted while every slot is busy ride together in the next batch: under light load
nothing waits, and under heavy load each round trip carries many items.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class Batcher(Generic[T, R]):
    def __init__(self, flush: Flush[T, R], *, max_size: int = 256, concurrency: int = 1) -> None:
        self._flush = flush
        self._max_size = max_size
        self._concurrency = concurrency
        self._queue: deque[list[tuple[T, asyncio.Future[R]]]] = deque()  # groups, kept whole
        self._running = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        """Run `item` in a batch; returns its result or raises its exception.

        Cancelling the caller does not take the item out of a batch already running (a send
        may still commit: the client's resend is then answered as a duplicate).
        """
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append([(item, future)])
        self._kick()
        return await future

    async def submit_many(self, items: Sequence[T]) -> list[R | BaseException]:
        """Run `items` together, in this order, in one batch (never split across batches that
        run at once, so their order holds); results or exceptions in the order of `items`.
        At most `max_size` items."""
        if len(items) > self._max_size:
            raise ValueError(f"at most {self._max_size} items in one group")
        loop = asyncio.get_running_loop()
        group = [(item, loop.create_future()) for item in items]
        if group:
            self._queue.append(group)
            self._kick()
        outcomes = await asyncio.gather(*(future for _, future in group), return_exceptions=True)
        return list(outcomes)

    def _kick(self) -> None:
        if self._queue and not self._scheduled and self._running < self._concurrency:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        while self._queue and self._running < self._concurrency:
            batch = self._queue.popleft()
            while self._queue and len(batch) + len(self._queue[0]) <= self._max_size:
                batch.extend(self._queue.popleft())
            self._running += 1
            task = asyncio.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._running -= 1
            self._kick()
