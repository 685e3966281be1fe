"""The broker (broker.py) over a Redis Cluster's sharded pub/sub (CHATD_REDIS_CLUSTER).

A channel lives on the primary owning its hash slot (and its replicas): SPUBLISH goes there
through the cluster client (the outbox and the ephemeral queue with ``sharded=True``, so the
publish paths and their error policies are redis_broker.py's), and each worker holds one
subscriber connection per primary that owns a slot of a channel it follows, SSUBSCRIBEd one
channel per command (several channels in one command must share a slot).

The topology changes under it: a primary dies and its replica takes over, an operator hands a
primary over (CLUSTER FAILOVER) or moves slots. Each case shows on a subscriber connection: it
breaks, or the node ends the channels' subscriptions itself (a ``sunsubscribe`` we did not ask
for: the slot is no longer served there). Either way the broker is *repaired*: every subscriber
connection is dropped, the slot map refreshed, every channel SSUBSCRIBEd again on its owner
(retried with backoff until the new owner is known and answers), confirmed with a PING per
connection, and then the hub is told messages may have been missed (``on_resync``: it re-reads
its conversations from Postgres). Rebuilding everything on any change is simple and a change is
rare; the resync is what keeps every online member caught up.

Callers' subscribes wait while a repair runs (`_up`) and never run during one (`_lock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chatd.broker import OnMessage, OnResync
from chatd.outbox import CONTROL_CHANNEL
from chatd.publishing import Publishing
from chatd.subscribing import Subscribing

log = logging.getLogger("chatd.fanout")

REPAIR_BACKOFF_MAX_S = 1.0
REPAIR_TIMEOUT_S = 5.0
SUBSCRIBER_WAIT_S = 10.0  # a caller's subscribe: for a repair to end, and the subscribe confirmed
CONNECT_TIMEOUT_S = 1.0
# The TLS options of the cluster client's node connections (rediss:// and its ssl_* query
# options) that a subscriber connection takes too: the same CA, verification and client cert.
TLS_OPTIONS = (
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_include_verify_flags",
    "ssl_exclude_verify_flags",
    "ssl_ca_certs",
    "ssl_ca_data",
    "ssl_check_hostname",
    "ssl_min_version",
    "ssl_ciphers",
)


def _tls(node: ClusterNode) -> dict[str, Any]:
    """A node's TLS settings as redis.asyncio.Redis takes them; {} when it is plain TCP."""
    if not issubclass(node.connection_class, SSLConnection):
        return {}
    kwargs = node.connection_kwargs
    return {"ssl": True, **{name: kwargs[name] for name in TLS_OPTIONS if name in kwargs}}


@dataclass
class _Shard:
    """The subscriber connection to one primary."""

    name: str
    client: aioredis.Redis
    pubsub: Any
    reader: asyncio.Task[None] | None = None
    channels: set[str] = field(default_factory=set)


class ClusterBroker(Publishing, Subscribing):
    def __init__(self, redis: RedisCluster, publish_timeout_s: float) -> None:
        Publishing.__init__(self, redis, publish_timeout_s, sharded=True)  # type: ignore[arg-type]
        Subscribing.__init__(self)
        self.cluster = redis
        self._channels: set[str] = set()  # every channel to be subscribed, wherever it lives
        self._shards: dict[str, _Shard] = {}  # primary's name -> its subscriber connection
        self._broken = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None:
        self._on_message, self._on_resync = on_message, on_resync
        async with asyncio.timeout(SUBSCRIBER_WAIT_S):
            await self.cluster.initialize()  # the slot map (the client loads it lazily otherwise)
            await self._subscribe([CONTROL_CHANNEL])
        self._up.set()
        self._keeper = asyncio.create_task(self._keep())
        self._start_publishing()

    async def stop(self, grace_s: float) -> None:
        await self._stop_publishing(grace_s)
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        await self._close_shards()

    # -- subscriptions -------------------------------------------------------------------
    async def subscribe(self, channels: Sequence[str]) -> None:
        async with asyncio.timeout(SUBSCRIBER_WAIT_S):
            while True:
                await self._up.wait()
                try:
                    await self._subscribe(channels)
                    return
                except (redis.exceptions.RedisError, OSError):
                    self._break("subscribe failed")
                    await asyncio.sleep(0.05)  # the repair subscribes them, then we confirm

    async def _subscribe(self, channels: Sequence[str]) -> None:
        """SSUBSCRIBE the new ones on their owners and wait for a PONG from each connection
        used: whatever is published from then on is received. Under the lock, so a later
        caller's return covers the channels of every earlier one."""
        async with self._lock:
            touched: dict[str, _Shard] = {}
            for channel in channels:
                if channel in self._channels:
                    continue
                self._channels.add(channel)
                shard = await self._shard_for(channel)
                await shard.pubsub.ssubscribe(channel)
                touched[shard.name] = shard
            await self._confirm(list(touched.values()))

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        for shard in list(self._shards.values()):
            if channel in shard.channels:
                shard.channels.discard(channel)
                with contextlib.suppress(redis.exceptions.RedisError, OSError):
                    await shard.pubsub.sunsubscribe(channel)

    @property
    def subscribed(self) -> frozenset[str]:
        return frozenset(self._channels)

    async def _shard_for(self, channel: str) -> _Shard:
        node = self.cluster.get_node_from_key(channel)
        if node is None:
            raise redis.exceptions.ClusterError(f"no node owns {channel}")
        shard = self._shards.get(node.name)
        if shard is None:
            kwargs = node.connection_kwargs
            client = aioredis.Redis(
                host=node.host,
                port=int(node.port),
                username=kwargs.get("username"),
                password=kwargs.get("password"),
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_keepalive=True,
                retry=Retry(NoBackoff(), 0, ()),  # never reconnected silently: a repair is
                **_tls(node),
            )
            shard = _Shard(node.name, client, client.pubsub())
            await shard.pubsub.ping(b"hello")  # connects (a pubsub has no connection before)
            shard.reader = asyncio.create_task(self._read(shard))
            self._shards[node.name] = shard
        shard.channels.add(channel)
        return shard

    async def _confirm(self, shards: list[_Shard]) -> None:
        """PING each connection after its SSUBSCRIBEs; the PONGs say they are active."""
        waits = []
        for shard in shards:
            token, future = self._expect_pong()
            waits.append((token, future))
            await shard.pubsub.ping(token)
        try:
            for _, future in waits:
                await future
        finally:
            for token, _ in waits:
                self._pongs.pop(token, None)

    # -- reading -------------------------------------------------------------------------
    async def _read(self, shard: _Shard) -> None:
        while True:
            try:
                message = await shard.pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._break(f"subscriber to {shard.name} lost: {exc!r}")
                return
            if message is not None:
                try:
                    self._handle(shard, message)
                except Exception:
                    log.exception("bad pubsub message", extra={"channel": message.get("channel")})

    def _handle(self, shard: _Shard, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pong":
            self._ponged(message["data"])
            return
        if kind == "sunsubscribe":
            channel = message["channel"].decode()
            if channel in self._channels and channel in shard.channels:  # not ours: the slot moved
                self._break(f"{shard.name} no longer serves {channel}")
            return
        if kind == "smessage":
            self._received(message["channel"].decode(), message["data"])

    # -- repair --------------------------------------------------------------------------
    def _break(self, why: str) -> None:
        if self._broken.is_set():
            return
        log.warning("redis cluster subscriber broken; repairing", extra={"reason": why})
        self._broken.set()
        self._up.clear()
        for future in self._pongs.values():
            if not future.done():
                future.set_exception(redis.exceptions.ConnectionError(why))

    async def _keep(self) -> None:
        while True:
            await self._broken.wait()
            began = time.monotonic()
            self._broken.clear()
            await self._repair()
            if not self._broken.is_set():
                self._up.set()
            seconds = round(time.monotonic() - began, 3)
            log.info("redis cluster subscriber repaired", extra={"seconds": seconds})
            self._on_resync()

    async def _repair(self) -> None:
        """Retry (backoff up to 1 s) until every channel is subscribed on its current owner."""
        backoff = 0.05
        while True:
            try:
                async with self._lock, asyncio.timeout(REPAIR_TIMEOUT_S):
                    await self._close_shards()
                    await self.cluster.nodes_manager.initialize()  # the slot map, fresh
                    for channel in list(self._channels):
                        shard = await self._shard_for(channel)
                        await shard.pubsub.ssubscribe(channel)
                    await self._confirm(list(self._shards.values()))
                return
            except Exception as exc:
                log.info("redis cluster subscriber repair failed; retrying", extra={"error": repr(exc)})
                self._broken.clear()  # this failure's own break: retrying is its repair
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, REPAIR_BACKOFF_MAX_S)

    async def _close_shards(self) -> None:
        shards, self._shards = list(self._shards.values()), {}
        for shard in shards:
            if shard.reader is not None:
                shard.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await shard.reader
        for shard in shards:
            with contextlib.suppress(Exception):
                await shard.pubsub.aclose()
            with contextlib.suppress(Exception):
                await shard.client.aclose()
