"""Everything one worker process holds: pools, the hub, the services, the drain state.

Below the transports: ws.py and http_api.py may import it (they are handed a Runtime), and it
imports none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from chatd import keyspace, metrics, migrations, notices
from chatd.accounts import Accounts, Limiters
from chatd.admin import Admin
from chatd.amends import Amends
from chatd.attachments import Attachments
from chatd.cluster_broker import ClusterBroker
from chatd.config import Settings, redis_urls
from chatd.confirms import Confirmations
from chatd.conncap import ConnectionCap
from chatd.connection import CLOSE_SERVICE_RESTART
from chatd.conversations import Conversations, TakingPart
from chatd.fanout import Hub
from chatd.messaging import Messaging
from chatd.notify import Notify
from chatd.presence import Presence
from chatd.pushes import Pushes
from chatd.ratelimit import RateLimiter
from chatd.readstate import DELIVERED, ReadState
from chatd.receipts import Flusher, Receipts
from chatd.redis_broker import RedisBroker
from chatd.sampler import Sampler, TimedRedisPool
from chatd.search import Search
from chatd.security import Passwords
from chatd.storage import Replica, Stores, create_pool
from chatd.storage.search import index_ready as search_index_ready
from chatd.subscriber import Subscriber
from chatd.tasks import Background
from chatd.webpush import VapidKey

log = logging.getLogger("chatd")
READY_REDIS_TIMEOUT_S = 2.0

# A pooled connection that Redis closed (it restarted) fails the next command sent on it, and
# redis-py 8.1 does not check pooled TCP connections for EOF before use: retry such a command
# on a fresh connection. Connection errors only (closed, reset, refused, still loading): each
# fails at once, so a Redis that is really down still fails in well under 0.2 s (three retries,
# up to 20, 40 and 80 ms apart); timeouts are not retried (the callers bound a hung Redis, see
# CHATD_REDIS_SEND_TIMEOUT_S). The commands retried are idempotent or harmless twice (a rate
# counter may count one action twice).
REDIS_RETRY = Retry(ExponentialWithJitterBackoff(cap=0.1, base=0.01), 3, (redis.exceptions.ConnectionError,))
# The subscriber's connection never reconnects inside redis-py: its reader task does that
# (redis_broker.py), then the hub resyncs what was missed, which a silent reconnect would skip.
SUBSCRIBER_RETRY = Retry(NoBackoff(), 0, ())


class SchemaOutdated(RuntimeError):
    pass


class Runtime:
    """Everything one worker process holds: pools, the hub, the services."""

    def __init__(
        self, settings: Settings, stores: Stores, redis: aioredis.Redis, subscriber: aioredis.Redis | None
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.redis = redis
        # Fan-out over Redis pub/sub: the command pool publishes, `subscriber` receives; on a
        # Redis Cluster (no `subscriber`), sharded pub/sub with a connection per primary.
        self.broker: RedisBroker | ClusterBroker
        if subscriber is None:
            self.broker = ClusterBroker(redis, settings.redis_send_timeout_s)  # type: ignore[arg-type]
        else:
            self.broker = RedisBroker(redis, subscriber, settings.redis_send_timeout_s)
        # The worker's background tasks, whoever starts them; cancelled last at shutdown.
        self.tasks = Background()
        spawn = self.tasks.spawn
        self.hub = Hub(
            self.broker,
            stores,
            spawn,
            settings.gap_fill_delay_s,
            on_resync=self._recheck_tokens,
            presence_max_group_size=settings.presence_max_group_size,
        )
        limiter = RateLimiter(
            redis,
            "send",
            settings.rate_limit_messages,
            settings.rate_limit_window_s,
            timeout_s=settings.redis_send_timeout_s,
        )
        limiters = Limiters(
            login=RateLimiter(redis, "login", settings.login_rate_limit, 60),
            login_address=RateLimiter(redis, "login-addr", settings.login_address_rate_limit, 60),
            register=RateLimiter(redis, "register", settings.register_rate_limit, 3600),
        )
        self.passwords = Passwords(
            settings.argon2_time_cost,
            settings.argon2_memory_kib,
            settings.argon2_concurrency,
            settings.argon2_queue,
        )
        self.accounts = Accounts(stores, self.passwords, limiters, self.hub, settings.registration)
        self.admin = Admin(stores, self.passwords, self.accounts)
        read_state = ReadState(redis, settings.redis_send_timeout_s)
        delivered = ReadState(redis, settings.redis_send_timeout_s, DELIVERED)
        lookups = RateLimiter(redis, "lookup", settings.user_lookup_rate_limit, 60)
        groups = RateLimiter(redis, "group", settings.group_rate_limit, 3600)
        self.receipts = Receipts(stores, read_state, self.hub, settings, delivered, spawn)
        self.confirms = Confirmations(
            self.receipts, delivered, self.hub, settings.redis_send_timeout_s, spawn
        )
        self.presence = Presence(redis, stores, self.hub, settings, spawn)
        self.search = Search(stores)
        taking_part = TakingPart(stores, self.receipts, self.presence)
        self.conversations = Conversations(
            stores, self.hub, self.receipts, taking_part, settings, lookups, groups
        )
        self.messaging = Messaging(stores, self.hub, limiter, taking_part, settings)
        key = None
        if settings.push_vapid_key_file:
            key = VapidKey.from_file(Path(settings.push_vapid_key_file), settings.push_subject)
        self.notify = Notify(stores, self.hub, settings, key)
        self.pushes = Pushes(stores, self.presence, redis, settings, key)
        self.messaging.on_committed = self.pushes.committed  # off the send path (pushes.py)
        self.attachments = Attachments(stores, settings)
        self.amends = Amends(stores, self.hub, limiter, settings)
        self.amends.on_delete.append(self.attachments.deleted)
        self.flusher = Flusher(stores, read_state, settings.receipt_flush_interval_s, delivered)
        self.conncap = ConnectionCap(
            redis,
            settings.max_connections_per_user,
            settings.presence_ttl_s,
            settings.presence_sweep_s,
            settings.redis_send_timeout_s,
        )
        self.presence.on_data_lost = self.conncap.data_lost
        self.sampler = Sampler(self.hub, stores, redis, self.flusher, self.presence)
        self.draining = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Marks a send the drain on shutdown must wait for."""
        self._inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()

    async def _recheck_tokens(self, subscribers: list[Subscriber]) -> None:
        """After a subscriber outage: close sessions whose token was revoked while no revoke
        could reach them (or the logging-out worker died before its publish)."""
        live = await self.accounts.live_tokens(sorted({sub.token_hash for sub in subscribers}))
        for sub in subscribers:
            if sub.token_hash not in live:
                sub.notice(notices.revoke(sub.token_hash))  # as a live revoke does
        await self.notify.resend([sub for sub in subscribers if sub.token_hash in live])

    async def readiness(self) -> list[str]:
        problems = []
        try:
            async with self.stores.pool.acquire() as conn:
                missing = await migrations.missing(conn)
            if missing:
                problems.append(f"schema: missing migrations {', '.join(missing)}")
        except Exception as exc:
            problems.append(f"postgres: {type(exc).__name__}")
        try:
            async with asyncio.timeout(READY_REDIS_TIMEOUT_S):  # a hung Redis is not ready either
                await self.redis.ping()
        except Exception as exc:
            problems.append(f"redis: {type(exc).__name__}")
        if self.draining:
            problems.append("draining")
        return problems

    async def drain(self) -> None:
        """Finish in-flight sends, then ask every client to reconnect elsewhere (1012)."""
        self.draining = True
        deadline = time.monotonic() + self.settings.drain_timeout_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.settings.drain_timeout_s)
        conns = list(self.hub.connections)
        for conn in conns:
            conn.close(CLOSE_SERVICE_RESTART, "service restart")
        if conns:
            await asyncio.wait(
                [asyncio.create_task(c.wait_closed()) for c in conns],
                timeout=max(0.5, deadline - time.monotonic()),
            )
        log.info("drained", extra={"connections": len(conns)})


async def open_runtime(settings: Settings) -> Runtime:
    pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
    try:
        async with pool.acquire() as conn:
            missing = await migrations.missing(conn)
            if not missing and not await search_index_ready(conn, settings.search_language):
                missing = [f"the search index for {settings.search_language}"]
        if missing:
            raise SchemaOutdated(
                f"database schema is behind: missing {', '.join(missing)}; run `chatd migrate`"
            )
        keyspace.use_cluster(settings.redis_cluster)
        redis, subscriber = _redis_clients(settings)
        replica = Replica(
            pool,
            settings.database_replica_url,
            settings.database_replica_max_lag_s,
            lambda url: create_pool(url, 1, settings.db_pool_max),  # made on the first read
        )
        replica.observe = metrics.replica_read
        runtime = Runtime(settings, Stores(pool, settings.search_language, replica), redis, subscriber)
        await runtime.hub.start()
        await runtime.conncap.start()
        runtime.flusher.start()
        runtime.presence.start()
        runtime.sampler.start()
        runtime.pushes.start()
        runtime.attachments.start()
    except BaseException:
        await pool.close()
        raise
    return runtime


def _redis_clients(settings: Settings) -> tuple[aioredis.Redis, aioredis.Redis | None]:
    """The command client, and the subscriber's (None on a cluster: the broker makes its own)."""
    options: dict[str, Any] = {"health_check_interval": 30, "socket_keepalive": True}
    if settings.redis_cluster:
        # One client for the whole cluster: it follows MOVED and failovers, a pool per node. Every
        # node listed is a seed, asked in turn for the slot map until one answers; the options of
        # the URLs (the same for each, config.py) apply to every node's connections: with
        # rediss://, TLS verified against ssl_ca_certs (the broker's subscribers take them too).
        first, *others = redis_urls(settings.redis_url)
        seeds = [ClusterNode(node.hostname or "", node.port or 6379) for node in map(urlsplit, others)]
        cluster = RedisCluster.from_url(
            first,
            startup_nodes=seeds,
            max_connections=settings.redis_pool_max,
            retry=REDIS_RETRY,
            **options,
        )
        return cluster, None  # type: ignore[return-value]  # the commands chatd uses are common
    # Past `redis_pool_max` connections a command waits for a free one (up to 10 s)
    # instead of failing: a burst then queues rather than answering `unavailable`.
    pool_class = TimedRedisPool if metrics.ENABLED else aioredis.BlockingConnectionPool
    redis_pool = pool_class.from_url(
        settings.redis_url, max_connections=settings.redis_pool_max, retry=REDIS_RETRY, timeout=10, **options
    )
    redis = aioredis.Redis.from_pool(redis_pool)  # closing the client closes the pool
    # The subscriber's one connection, in a pool of its own (a different retry policy).
    subscriber_pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=1, retry=SUBSCRIBER_RETRY, timeout=10, **options
    )
    return redis, aioredis.Redis.from_pool(subscriber_pool)


async def close_runtime(runtime: Runtime) -> None:
    await runtime.pushes.stop()
    await runtime.attachments.stop()
    await runtime.sampler.stop()
    await runtime.presence.stop()
    await runtime.flusher.stop()  # writes every pointer still only in Redis
    await runtime.hub.stop()
    await runtime.tasks.stop()
    if isinstance(runtime.broker, RedisBroker):
        await runtime.broker.subscriber.aclose()
    await runtime.redis.aclose()
    await runtime.stores.replica.close()
    await runtime.stores.pool.close()
    runtime.passwords.close()
