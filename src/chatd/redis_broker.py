"""The broker (broker.py) over Redis pub/sub: one subscriber connection per process.

Publishing goes through the outbox (sequenced, outbox.py) and the ephemeral queue
(ephemeral.py), both on the shared command pool. The subscriber has a client of its own, one
connection that redis-py never reconnects: the reader task does it, then asks for a resync.
Commands from callers wait while it is away (`_up`) and never run during a reconnect (`_lock`):
two tasks connecting it at once break it.

Subscribing is confirmed (SUBSCRIBE then PING; the PONG comes back after the subscription is
active) before the caller reads its baseline, which closes the subscribe-vs-query race.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from chatd.broker import OnMessage, OnResync
from chatd.outbox import CONTROL_CHANNEL, RESYNC
from chatd.publishing import Publishing
from chatd.subscribing import Subscribing

log = logging.getLogger("chatd.fanout")  # the name operators know (docs/operations.md)

RECONNECT_BACKOFF_MAX_S = 1.0
RECONNECT_TIMEOUT_S = 5.0
SUBSCRIBER_WAIT_S = 10.0  # a caller's subscribe: for the subscriber to be back, and confirmed


class RedisBroker(Publishing, Subscribing):
    def __init__(self, redis: aioredis.Redis, subscriber: aioredis.Redis, publish_timeout_s: float) -> None:
        Publishing.__init__(self, redis, publish_timeout_s)
        Subscribing.__init__(self)
        self.subscriber = subscriber
        self._pubsub = subscriber.pubsub()
        self._reader: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None:
        self._on_message, self._on_resync = on_message, on_resync
        await self._pubsub.subscribe(CONTROL_CHANNEL)
        self._up.set()
        self._reader = asyncio.create_task(self._read_loop())
        await self._confirm()
        self._start_publishing()

    async def stop(self, grace_s: float) -> None:
        await self._stop_publishing(grace_s)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    # -- subscriptions -------------------------------------------------------------------
    async def subscribe(self, channels: Sequence[str]) -> None:
        if channels:
            await self._command(lambda: self._pubsub.subscribe(*channels))
        await self._confirm()

    async def unsubscribe(self, channel: str) -> None:
        with contextlib.suppress(redis.exceptions.RedisError, TimeoutError):
            await self._command(lambda: self._pubsub.unsubscribe(channel))

    async def _command(self, call: Callable[[], Awaitable[Any]]) -> None:
        """Run a subscribe, unsubscribe or ping on the subscriber's connection once it is up; if
        the connection fails under it, again after the reader has reconnected."""
        async with asyncio.timeout(SUBSCRIBER_WAIT_S):
            while True:
                await self._up.wait()
                try:
                    async with self._lock:
                        await call()
                    return
                except redis.exceptions.ConnectionError:
                    await asyncio.sleep(0.05)  # the reader sees the same loss and reconnects

    async def _confirm(self) -> None:
        """Returns once every SUBSCRIBE sent before it is active: a PING sent after them comes
        back as a PONG. After a reconnect (which subscribes every channel again) the reader
        sends the PING again."""
        token, future = self._expect_pong()
        try:
            async with asyncio.timeout(SUBSCRIBER_WAIT_S):
                await self._command(lambda: self._pubsub.ping(token))
                await future
        finally:
            self._pongs.pop(token, None)

    # -- the subscriber ------------------------------------------------------------------
    async def _read_loop(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._up.clear()
                log.warning("redis subscriber disconnected; reconnecting", exc_info=True)
                await self._reconnect()
                self._up.set()
                continue
            if message is not None:
                try:
                    self._handle(message)
                except Exception:
                    log.exception("bad pubsub message", extra={"channel": message.get("channel")})

    async def _reconnect(self) -> None:
        """Retry (backoff up to 1 s) until re-subscribed and the resync PING is sent.

        Reconnecting re-subscribes every channel; the PONG then marks the point after which
        nothing more can be missed, and resync reads the rest. Reading only resumes once the
        PING is out: a reconnect done inside get_message would skip the resync.
        """
        backoff = 0.1
        while True:
            await asyncio.sleep(backoff)
            try:
                async with self._lock, asyncio.timeout(RECONNECT_TIMEOUT_S):  # e.g. a hung server
                    if self._pubsub.connection is not None:
                        await self._pubsub.connection.disconnect(nowait=True)
                    await self._pubsub.connect()  # type: ignore[no-untyped-call]
                    for token in list(self._pongs):  # their PINGs went out on the lost connection
                        await self._pubsub.ping(token)
                    await self._pubsub.ping(RESYNC)
            except Exception:
                backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_S)
                continue
            log.info("redis subscriber reconnected")
            return

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pong":
            if message["data"] == RESYNC:
                self._on_resync()
            else:
                self._ponged(message["data"])
        elif kind == "message":
            self._received(message["channel"].decode(), message["data"])
