"""The per-user WebSocket cap, counted across every worker in the presence connection set.

``chatd:pc:<uid>`` (presence.py) holds each live connection of a user with its expiry; entries in
``chatd:pgrace:<uid>`` are closed connections kept only for the presence grace period. One Lua
script counts the live ones and, below the cap, adds the new connection in the same step, so
concurrent connects on any number of workers cannot overshoot.

If Redis loses its data (a restart without persistence, a new Redis host, FLUSHALL), the set is
empty while the sockets are still open: each worker re-registers its own at its next presence
sweep. ``chatd:pepoch`` (Redis time, ms; one per user shard on a cluster, keyspace.py) says
from when the set is complete again, and admissions wait until then rather than count an
incomplete set. The key goes with the data:

- a worker that starts sets it to now if it is missing (a new Redis: nothing to re-register);
- an admission that finds it missing, or a running worker's sweep that found its own marker
  gone (presence.py), sets it to now plus two sweep periods (and 0.5 s), unless it is already
  further ahead: every worker has swept, and re-registered, by then.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from chatd import keyspace

REBUILD_MARGIN_S = 0.5  # beyond two sweep periods: a sweep's own round trips, a busy loop

# KEYS: conns, grace, epoch; ARGV: conn, cap, ttl_ms, rebuild_ms
# -> {1, 0} admitted, {0, 0} refused, {-1, ms} the set is being rebuilt: ask again in ms
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local complete = tonumber(redis.call('GET', KEYS[3]) or '-1')
if complete < 0 then
  complete = now + tonumber(ARGV[4])
  redis.call('SET', KEYS[3], complete)
end
if now < complete then return {-1, complete - now} end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {1, 0} end  -- a retried admission
local live = 0
for _, c in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  if redis.call('SISMEMBER', KEYS[2], c) == 0 then live = live + 1 end
end
if live >= tonumber(ARGV[2]) then return {0, 0} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return {1, 0}
"""

# KEYS: epoch; ARGV: rebuild_ms (0: a worker starts) -> the epoch
_SET_EPOCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local complete = tonumber(redis.call('GET', KEYS[1]) or '-1')
if ARGV[1] == '0' then
  if complete < 0 then complete = now end
elseif complete < now + tonumber(ARGV[1]) then
  complete = now + tonumber(ARGV[1])
end
redis.call('SET', KEYS[1], complete)
return complete
"""


class ConnectionCap:
    def __init__(
        self,
        redis: aioredis.Redis,
        cap: int,
        ttl_s: float,
        sweep_s: float,
        timeout_s: float | None = None,
    ) -> None:
        self._redis = redis
        self._admit = redis.register_script(_ADMIT)
        self._set_epoch = redis.register_script(_SET_EPOCH)
        self._cap = cap
        self._ttl_ms = int(ttl_s * 1000)
        # Every worker sweeps (and so re-registers after a loss) within one period of the loss;
        # the first sweep to notice may come a period after it too.
        self._rebuild_ms = int((2 * sweep_s + REBUILD_MARGIN_S) * 1000)
        self._timeout_s = timeout_s  # a hung Redis: the connect fails fast (1011), it does not hang

    async def admit(self, user_id: int, conn_id: str) -> bool:
        """Count `conn_id` as live for `user_id` unless the user already has `cap` live ones.

        Right after Redis lost its data this waits (at most two sweep periods and a half
        second) until every worker has counted its connections again."""
        keys = [
            keyspace.presence("pc", user_id),
            keyspace.presence("pgrace", user_id),
            keyspace.presence_shared("pepoch", keyspace.user_shard(user_id)),
        ]
        args: list[str | int] = [conn_id, self._cap, self._ttl_ms, self._rebuild_ms]
        while True:
            async with asyncio.timeout(self._timeout_s):
                status, wait_ms = await self._admit(keys=keys, args=args)
            if int(status) >= 0:
                return bool(int(status))
            await asyncio.sleep(min(int(wait_ms), self._rebuild_ms) / 1000)

    async def start(self) -> None:
        """A worker starts: a Redis without the epoch is taken as new (nothing to wait for)."""
        await self._set_epochs(0)

    async def data_lost(self) -> None:
        """A running worker's sweep found its marker gone: admissions wait for the rebuild."""
        async with asyncio.timeout(self._timeout_s):
            await self._set_epochs(self._rebuild_ms)

    async def _set_epochs(self, rebuild_ms: int) -> None:
        """The epoch of every user shard (one on one Redis): each shard keeps its own."""
        shards = keyspace.user_shards()
        if len(shards) == 1:
            await self._set_epoch(keys=[keyspace.presence_shared("pepoch", shards[0])], args=[rebuild_ms])
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                await keyspace.queue_script(
                    pipe, self._set_epoch, [keyspace.presence_shared("pepoch", shard)], [rebuild_ms]
                )
            await pipe.execute()
