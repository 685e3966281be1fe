"""The per-user WebSocket cap, counted across every worker in the presence connection set.

``chatd:pc:<uid>`` (presence.py) holds each live connection of a user with its expiry; entries in
``chatd:pgrace:<uid>`` are closed connections kept only for the presence grace period. One Lua
script counts the live ones and, below the cap, adds the new connection in the same step, so
concurrent connects on any number of workers cannot overshoot.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

# KEYS: conns, grace; ARGV: conn, cap, ttl_ms -> 1 admitted, 0 refused
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = 0
for _, c in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  if redis.call('SISMEMBER', KEYS[2], c) == 0 then live = live + 1 end
end
if live >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""


class ConnectionCap:
    def __init__(self, redis: aioredis.Redis, cap: int, ttl_s: float, timeout_s: float | None = None) -> None:
        self._admit = redis.register_script(_ADMIT)
        self._cap = cap
        self._ttl_ms = int(ttl_s * 1000)
        self._timeout_s = timeout_s  # a hung Redis: the connect fails fast (1011), it does not hang

    async def admit(self, user_id: int, conn_id: str) -> bool:
        """Count `conn_id` as live for `user_id` unless the user already has `cap` live ones."""
        keys = [f"chatd:pc:{user_id}", f"chatd:pgrace:{user_id}"]
        async with asyncio.timeout(self._timeout_s):
            admitted = await self._admit(keys=keys, args=[conn_id, self._cap, self._ttl_ms])
        return bool(int(admitted))
