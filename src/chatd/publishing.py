"""The two publish queues every Redis broker publishes through, on one Redis or a cluster.

Sequenced (outbox.py: in commit order, retried until Redis takes it) and ephemeral
(ephemeral.py: coalesced by key, one bounded attempt). The brokers differ in how they
subscribe, not in how they publish: on a cluster the same queues send SPUBLISH.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence

import redis.asyncio as aioredis

from chatd.broker import Message
from chatd.ephemeral import Ephemeral
from chatd.outbox import Outbox


class Publishing:
    def __init__(self, redis: aioredis.Redis, publish_timeout_s: float, sharded: bool = False) -> None:
        # One queue, one pipeline at a time: this worker's publishes go out in commit order.
        self._outbox = Outbox(redis, publish_timeout_s, sharded=sharded)
        self._ephemeral = Ephemeral(redis, publish_timeout_s, sharded=sharded)

    def _start_publishing(self) -> None:
        self._outbox.start()
        self._ephemeral.start()

    async def _stop_publishing(self, grace_s: float) -> None:
        await self._outbox.stop(grace_s)
        await self._ephemeral.stop(grace_s)

    async def publish_sequenced(self, messages: Sequence[Message]) -> bool:
        return await self._outbox.publish(list(messages))

    def publish_ephemeral(
        self, messages: Sequence[Message], key: Hashable | None = None
    ) -> asyncio.Future[bool]:
        return self._ephemeral.publish(messages, key)

    @property
    def pending(self) -> int:
        return self._outbox.pending
