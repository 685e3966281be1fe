"""Per-key fixed-window limits in Redis, shared by every worker and host."""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis
import redis.exceptions

from chatd.errors import ChatdError, Code

log = logging.getLogger("chatd.ratelimit")

# INCR the window's counter and set its expiry on first use, in one round trip.
_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, prefix: str, limit: int, window_s: int) -> None:
        self._script = redis.register_script(_SCRIPT)
        self._prefix = prefix
        self._limit = limit
        self._window_ms = window_s * 1000

    async def hit(self, key: str | int) -> None:
        """Count one action; raises `rate_limited` past the limit.

        If Redis is unreachable the action is allowed (fail open): sends stay durable in
        Postgres and the outage is logged.
        """
        now_ms = int(time.time() * 1000)
        window = now_ms // self._window_ms
        try:
            count = await self._script(
                keys=[f"chatd:rl:{self._prefix}:{key}:{window}"], args=[self._window_ms]
            )
        except redis.exceptions.RedisError:
            log.warning("rate limiter unavailable; allowing", extra={"key": self._prefix})
            return
        if int(count) > self._limit:
            retry_after_ms = (window + 1) * self._window_ms - now_ms
            raise ChatdError(Code.RATE_LIMITED, "too many requests", retry_after_ms=retry_after_ms)
