"""Publishing ephemeral state (presence, typing, read counts): latest value wins, never waited for.

The counterpart of the outbox (outbox.py), with the opposite error policy. State is not part
of any sequenced stream and a late value is wrong rather than useful, so:

- ``publish`` only queues and returns at once: the caller (a socket's frame loop, a presence
  change) never waits for Redis;
- messages given the same ``key`` coalesce: a newer value replaces one not yet sent, in place;
- one task sends what is queued in one pipeline per round, bounded by `timeout_s`; a round
  that fails is dropped, never retried, and counted (``chatd_ephemeral_dropped_total``);
- past `max_pending` queued values a new one is dropped and counted the same way.

Each publish returns a future that resolves True once Redis took the value (or the value that
replaced it), False if it was dropped; callers may ignore it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Hashable, Sequence

import redis.asyncio as aioredis

from chatd import logs, metrics, tasks

log = logging.getLogger("chatd.ephemeral")

MAX_PENDING = 10_000
BATCH_MAX = 512

Message = tuple[str, str]  # (channel, payload)


class _Pending:
    __slots__ = ("futures", "messages")

    def __init__(self, messages: Sequence[Message], future: asyncio.Future[bool]) -> None:
        self.messages = messages
        self.futures = [future]


class Ephemeral:
    def __init__(
        self, redis: aioredis.Redis, timeout_s: float, max_pending: int = MAX_PENDING, sharded: bool = False
    ) -> None:
        self._redis = redis
        self._sharded = sharded  # SPUBLISH (a Redis Cluster's sharded pub/sub, cluster_broker.py)
        self._timeout_s = timeout_s
        self._max_pending = max_pending
        self._pending: dict[Hashable, _Pending] = {}
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # nothing queued or being sent
        self._idle.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self, grace_s: float = 0.0) -> None:
        """Give what is queued up to `grace_s` to go out, then drop the rest."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_s)
        await tasks.cancel(self._task)
        self._settle(list(self._pending.values()), False)
        self._pending.clear()

    def publish(self, messages: Sequence[Message], key: Hashable | None = None) -> asyncio.Future[bool]:
        """Queue `messages` (sent together, in order); a later publish with the same `key`
        replaces them if they have not gone out yet."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not messages:
            future.set_result(True)
            return future
        slot: Hashable = ("_", next(self._ids)) if key is None else key
        queued = self._pending.get(slot)
        if queued is not None:
            queued.messages = messages
            queued.futures.append(future)
        elif len(self._pending) >= self._max_pending:
            metrics.EPHEMERAL_DROPPED.inc(len(messages))
            logs.throttled(log, "ephemeral-full", "ephemeral state dropped: queue full", logging.INFO)
            future.set_result(False)
        else:
            self._pending[slot] = _Pending(messages, future)
            self._idle.clear()
            self._wake.set()
        return future

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            keys = list(itertools.islice(self._pending, BATCH_MAX))
            batch = [self._pending.pop(key) for key in keys]
            ok = False
            try:
                ok = await self._send(batch)
            finally:
                self._settle(batch, ok)

    async def _send(self, batch: list[_Pending]) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._redis.pipeline(transaction=False) as pipe:
                    send = pipe.spublish if self._sharded else pipe.publish
                    for item in batch:
                        for channel, payload in item.messages:
                            send(channel, payload)
                    await pipe.execute()
        except Exception as exc:
            metrics.EPHEMERAL_DROPPED.inc(sum(len(item.messages) for item in batch))
            logs.throttled(log, "ephemeral", "ephemeral state dropped", logging.INFO, error=repr(exc))
            return False
        return True

    @staticmethod
    def _settle(batch: list[_Pending], ok: bool) -> None:
        for item in batch:
            for future in item.futures:
                if not future.done():
                    future.set_result(ok)
