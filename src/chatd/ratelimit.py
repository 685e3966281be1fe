"""Per-key fixed-window limits in Redis, shared by every worker and host."""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
import redis.exceptions

from chatd import keyspace
from chatd.batching import Batcher
from chatd.errors import ChatdError, Code

log = logging.getLogger("chatd.ratelimit")
SKIP_AFTER_FAILURE_S = 1.0


class RateLimiter:
    def __init__(
        self, redis: aioredis.Redis, prefix: str, limit: int, window_s: int, *, timeout_s: float | None = None
    ) -> None:
        self._redis = redis
        self._timeout_s = timeout_s
        self._skip_until = 0.0  # monotonic; while Redis just failed, allow without asking it
        # Concurrent hits (many users sending at once) share one pipelined round trip.
        self._hits: Batcher[str, int] = Batcher(self._count_many)
        self._prefix = prefix
        self._limit = limit
        self._window_ms = window_s * 1000

    async def hit(self, key: str | int) -> None:
        """Count one action; raises `rate_limited` past the limit.

        If Redis is unreachable, or does not answer within `timeout_s`, the action is allowed
        (fail open): sends stay durable in Postgres and the outage is logged. For
        `SKIP_AFTER_FAILURE_S` after a failure Redis is not asked at all, so a hung Redis costs
        one timeout per that period, not one per action.
        """
        if time.monotonic() < self._skip_until:
            return
        now_ms = int(time.time() * 1000)
        window = now_ms // self._window_ms
        try:
            async with asyncio.timeout(self._timeout_s):
                count = await self._hits.submit(keyspace.rate(self._prefix, key, window))
        except (redis.exceptions.RedisError, TimeoutError) as exc:
            self._skip_until = time.monotonic() + SKIP_AFTER_FAILURE_S
            log.warning("rate limiter unavailable; allowing", extra={"key": self._prefix, "error": repr(exc)})
            return
        if int(count) > self._limit:
            raise self._refusal(window, now_ms)

    async def check(self, key: str | int) -> None:
        """Raise `rate_limited` if `key` is already over the limit, without counting (fail open)."""
        now_ms = int(time.time() * 1000)
        window = now_ms // self._window_ms
        try:
            count = await self._redis.get(keyspace.rate(self._prefix, key, window))
        except redis.exceptions.RedisError:
            log.warning("rate limiter unavailable; allowing", extra={"key": self._prefix})
            return
        if count is not None and int(count) >= self._limit:
            raise self._refusal(window, now_ms)

    async def add(self, key: str | int, amount: int) -> None:
        """Count `amount` actions at once; raises `rate_limited` if that takes `key` past the
        limit (fail open). `check` then refuses the key until the window ends."""
        now_ms = int(time.time() * 1000)
        window = now_ms // self._window_ms
        name = keyspace.rate(self._prefix, key, window)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incrby(name, amount)
                pipe.pexpire(name, self._window_ms, nx=True)
                count, _ = await pipe.execute()
        except redis.exceptions.RedisError:
            log.warning("rate limiter unavailable; not counted", extra={"key": self._prefix})
            return
        if int(count) > self._limit:
            raise self._refusal(window, now_ms)

    def _refusal(self, window: int, now_ms: int) -> ChatdError:
        retry_after_ms = (window + 1) * self._window_ms - now_ms
        return ChatdError(Code.RATE_LIMITED, "too many requests", retry_after_ms=retry_after_ms)

    async def _count_many(self, keys: list[str]) -> list[int]:
        # INCR, then an expiry only where none is set yet (Redis >= 7); a key left without one
        # by a crash in between only holds an old window's count.
        # The bound here frees the batch slot and drops the connection of a hung call
        # (redis-py disconnects a command cancelled mid-flight), not just its waiters.
        async with asyncio.timeout(self._timeout_s), self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.incr(key)
                pipe.pexpire(key, self._window_ms, nx=True)
            replies = await pipe.execute()
        return [int(count) for count in replies[::2]]
