"""The broker (broker.py) inside one process, for fast tests of the hub, topics and sessions.

A ``MemoryBus`` stands for the Redis server; each ``MemoryBroker`` on it for one worker's
connection. Same guarantees as redis_broker.py: a message reaches every broker subscribed to
its channel when it is published, each broker receives in publish order (one queue, one reader
task), sequenced publishes are taken at once, and ephemeral ones go out on the next loop turn,
a newer one with the same key replacing one not yet sent. Nothing fails, so nothing is retried
or dropped and ``on_resync`` is called only by ``MemoryBus.resync`` (as a worker that dropped
publishes would ask every worker to).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Hashable, Sequence

from chatd.broker import Message, OnMessage, OnResync

log = logging.getLogger("chatd.memory_broker")


class MemoryBus:
    def __init__(self) -> None:
        self.channels: dict[str, set[MemoryBroker]] = {}
        self.brokers: set[MemoryBroker] = set()

    def send(self, messages: Sequence[Message]) -> None:
        for channel, payload in messages:
            data = payload.encode()
            for broker in self.channels.get(channel, ()):
                broker.inbox.put_nowait((channel, data))

    def resync(self) -> None:
        for broker in self.brokers:
            broker.inbox.put_nowait(None)


class MemoryBroker:
    def __init__(self, bus: MemoryBus) -> None:
        self.bus = bus
        self.inbox: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()  # None: resync
        self._reader: asyncio.Task[None] | None = None
        self._subscribed: set[str] = set()
        self._ephemeral: dict[Hashable, tuple[Sequence[Message], list[asyncio.Future[bool]]]] = {}
        self._ids = itertools.count()
        self._flush: asyncio.Handle | None = None

    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None:
        self.bus.brokers.add(self)
        self._reader = asyncio.create_task(self._read_loop(on_message, on_resync))

    async def stop(self, grace_s: float) -> None:
        self._send_ephemeral()
        for channel in list(self._subscribed):
            await self.unsubscribe(channel)
        self.bus.brokers.discard(self)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def subscribe(self, channels: Sequence[str]) -> None:
        for channel in channels:
            self.bus.channels.setdefault(channel, set()).add(self)
            self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)
        brokers = self.bus.channels.get(channel)
        if brokers is not None:
            brokers.discard(self)
            if not brokers:
                del self.bus.channels[channel]

    @property
    def subscribed(self) -> frozenset[str]:
        return frozenset(self._subscribed)

    async def publish_sequenced(self, messages: Sequence[Message]) -> bool:
        self.bus.send(messages)
        return True

    def publish_ephemeral(
        self, messages: Sequence[Message], key: Hashable | None = None
    ) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        slot: Hashable = ("_", next(self._ids)) if key is None else key
        futures = [*self._ephemeral[slot][1], future] if slot in self._ephemeral else [future]
        self._ephemeral[slot] = (messages, futures)  # a replaced value keeps its place
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self._send_ephemeral)
        return future

    @property
    def pending(self) -> int:
        return 0

    def _send_ephemeral(self) -> None:
        self._flush = None
        queued, self._ephemeral = self._ephemeral, {}
        for messages, futures in queued.values():
            self.bus.send(messages)
            for future in futures:
                if not future.done():
                    future.set_result(True)

    async def _read_loop(self, on_message: OnMessage, on_resync: OnResync) -> None:
        while True:
            item = await self.inbox.get()
            try:
                if item is None:
                    on_resync()
                else:
                    on_message(*item)
            except Exception:
                log.exception("bad message", extra={"channel": item and item[0]})
