"""Gauges read on the event loop: loop lag, connections, queues, pools, cluster backlogs.

Sampling here, rather than counting on every change or reading from the scrape thread, keeps
the hot path free of gauge updates and every read of chatd's state on the loop's own thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis

from chatd import metrics, tasks
from chatd.fanout import Hub
from chatd.presence import Presence
from chatd.receipts import Flusher
from chatd.storage import Stores

log = logging.getLogger("chatd")
TICK_S = 0.25  # loop-lag resolution
LOCAL_EVERY = 4  # ticks between local gauges (1 s)
CLUSTER_EVERY = 20  # ticks between cluster gauges read from Redis (5 s)


class TimedRedisPool(aioredis.BlockingConnectionPool):
    """Records how long each command waited for a free connection."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        conn = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        metrics.REDIS_WAIT.observe(time.perf_counter() - started)
        return conn


class Sampler:
    def __init__(
        self, hub: Hub, stores: Stores, redis: aioredis.Redis, flusher: Flusher, presence: Presence
    ) -> None:
        self._hub = hub
        self._stores = stores
        self._redis = redis
        self._flusher = flusher
        self._presence = presence
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if metrics.ENABLED:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        await tasks.cancel(self._task)

    async def _loop(self) -> None:
        lag = 0.0
        tick = 0
        while True:
            expected = time.perf_counter() + TICK_S
            await asyncio.sleep(TICK_S)
            lag = max(lag, time.perf_counter() - expected)
            tick += 1
            if tick % LOCAL_EVERY == 0:
                metrics.LOOP_LAG.set(lag)
                lag = 0.0
                self.local()
            if tick % CLUSTER_EVERY == 1:
                try:
                    await self.cluster()
                except Exception:
                    metrics.ERRORS.labels("metrics_sample").inc()

    def local(self) -> None:
        conns = self._hub.connections
        metrics.WS_OPEN.set(len(conns))
        metrics.QUEUED_FRAMES.set(sum(conn.queued for conn in conns))
        metrics.OUTBOX_PENDING.set(self._hub.broker.pending)
        pool = self._stores.pool
        size, idle = pool.get_size(), pool.get_idle_size()
        metrics.POOL_CONNECTIONS.labels("postgres", "in_use").set(size - idle)
        metrics.POOL_CONNECTIONS.labels("postgres", "idle").set(idle)
        redis_pool = getattr(self._redis, "connection_pool", None)  # none on a cluster client
        metrics.POOL_CONNECTIONS.labels("redis", "in_use").set(
            len(getattr(redis_pool, "_in_use_connections", ()))
        )
        available = getattr(redis_pool, "_available_connections", ())
        metrics.POOL_CONNECTIONS.labels("redis", "idle").set(sum(1 for c in available if c is not None))

    async def cluster(self) -> None:
        pending, age = await self._flusher.backlog()
        metrics.POINTERS_PENDING.set(pending)
        metrics.POINTERS_AGE.set(age)
        metrics.USERS_CONNECTED.set(await self._presence.connected_users())
