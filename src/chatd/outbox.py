"""Publishing after COMMIT, in commit order, retried until Redis takes it.

A send is acked once its event is committed, but the PUBLISH can fail: Redis restarting, every
pool connection busy, a hung server. A failed publish is not dropped: it stays queued here, in
order, and one task per worker retries the head of the queue with a short backoff until Redis
takes it. So an acked event reaches every subscriber soon after Redis works again, without a
later event in that conversation having to expose the gap.

Every attempt is bounded by `timeout_s`. Cancelling a redis-py command mid-flight disconnects
its connection (``Connection.read_response`` closes it on any BaseException), so a half-read
reply is never served to the next user of that connection. An attempt that timed out may still
have reached Redis, so a retry can publish an event twice: subscribers drop sequenced events
they already have, and state events (receipts) are idempotent.

If more than `max_pending` events wait, the oldest are dropped and, once Redis is back, every
worker is asked (``resync`` on the control channel) to re-read its conversations from Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque

import redis.asyncio as aioredis

from chatd import metrics, tasks

log = logging.getLogger("chatd.outbox")

CONTROL_CHANNEL = "chatd:ctl"
RESYNC = b"resync"
BATCH_MAX = 256
MAX_PENDING = 10_000
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 0.5

Entry = tuple[str, str, "asyncio.Future[bool] | None"]


class Outbox:
    def __init__(
        self, redis: aioredis.Redis, timeout_s: float, max_pending: int = MAX_PENDING, sharded: bool = False
    ) -> None:
        self._redis = redis
        self._sharded = sharded  # SPUBLISH (a Redis Cluster's sharded pub/sub, cluster_broker.py)
        self._timeout_s = timeout_s
        self._max_pending = max_pending
        self._queue: deque[Entry] = deque()
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._failing = False
        self._dropped = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def stop(self, grace_s: float) -> None:
        """Give what is still queued up to `grace_s` to go out, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), grace_s)
        if self._queue:
            log.warning("stopping with unpublished events", extra={"pending": len(self._queue)})
        await tasks.cancel(self._task)

    async def publish(self, messages: list[tuple[str, str]]) -> bool:
        """Queue `messages` (in order); True once Redis took them.

        Waits at most `timeout_s`, and not at all while publishing is failing: the messages
        stay queued and go out when Redis is back.
        """
        if not messages:
            return True
        future: asyncio.Future[bool] | None = None
        if not self._failing:
            future = asyncio.get_running_loop().create_future()
        for channel, payload in messages[:-1]:
            self._queue.append((channel, payload, None))
        self._queue.append((*messages[-1], future))
        self._empty.clear()
        self._wake.set()
        if future is None:
            return False
        done, _ = await asyncio.wait({future}, timeout=self._timeout_s)
        return bool(done) and future.result()

    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._trim()
            batch = list(itertools.islice(self._queue, BATCH_MAX))
            try:
                async with asyncio.timeout(self._timeout_s):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        send = pipe.spublish if self._sharded else pipe.publish
                        for channel, payload, _ in batch:
                            send(channel, payload)
                        if self._dropped:
                            send(CONTROL_CHANNEL, RESYNC)
                        await pipe.execute()
            except Exception as exc:
                metrics.PUBLISH_FAILURES.inc()
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "publish failed; retrying until Redis takes it",
                        extra={"pending": len(self._queue), "error": repr(exc)},
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            for _ in batch:
                _, _, future = self._queue.popleft()
                if future is not None and not future.done():
                    future.set_result(True)
            if not self._queue:
                self._empty.set()
            if self._dropped:
                log.warning("asked every worker to resync", extra={"dropped": self._dropped})
                self._dropped = 0
            if self._failing:
                self._failing = False
                log.info("publishing again", extra={"pending": len(self._queue)})
            backoff = BACKOFF_MIN_S

    def _trim(self) -> None:
        """Past `max_pending`, drop the oldest (subscribers re-read them from Postgres)."""
        excess = len(self._queue) - self._max_pending
        for _ in range(max(excess, 0)):
            _, _, future = self._queue.popleft()
            if future is not None and not future.done():
                future.set_result(False)
        if excess > 0:
            self._dropped += excess
            metrics.PUBLISH_DROPPED.inc(excess)
