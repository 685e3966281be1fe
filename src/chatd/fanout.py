"""Cross-worker fan-out: publish after commit, one Redis subscriber per process.

Channels: ``chatd:c:<conversation>`` carries each committed event as the exact JSON frame
clients receive; ``chatd:u:<user>`` carries per-user control messages (a conversation was
added, a token was revoked). A ``Topic`` turns its channel back into a gapless, ordered stream:
publishes from different workers may arrive out of order, and a worker may die between COMMIT
and PUBLISH, so an event ahead of the expected seq waits briefly and the gap is then read from
Postgres. Subscribing is confirmed (SUBSCRIBE then PING; the PONG comes back after the
subscription is active) before the baseline seq is read, which closes the subscribe-vs-query race.
A publish that fails is retried by the outbox (outbox.py); a subscriber that reconnects, or a
``resync`` on the control channel, re-reads every followed conversation's tail from Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from chatd import metrics
from chatd.connection import Event, dumps
from chatd.outbox import CONTROL_CHANNEL, RESYNC, Outbox
from chatd.storage import Stores
from chatd.subscriber import Subscriber

log = logging.getLogger("chatd.fanout")

RECONNECT_BACKOFF_MAX_S = 1.0
RECONNECT_TIMEOUT_S = 5.0


def conversation_channel(cid: int) -> str:
    return f"chatd:c:{cid}"


def user_channel(uid: int) -> str:
    return f"chatd:u:{uid}"


class Topic:
    """This process's ordered view of one conversation's event stream."""

    def __init__(self, hub: Hub, cid: int) -> None:
        self.hub = hub
        self.cid = cid
        self.conns: set[Subscriber] = set()
        self.next_seq: int | None = None  # None until the baseline is read
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ahead: dict[int, tuple[str, Event]] = {}
        self._gap_timer: asyncio.TimerHandle | None = None
        self._filling = False
        self._fill_to = 0  # the highest seq a fill was asked for

    def start(self, last_seq: int) -> None:
        self.next_seq = last_seq + 1
        early, self.ahead = self.ahead, {}
        for seq in sorted(early):
            self.accept(seq, *early[seq])
        if not self.ready.done():
            self.ready.set_result(None)

    def accept(self, seq: int, text: str, event: Event) -> None:
        if self.next_seq is None or seq > self.next_seq:
            self.ahead[seq] = (text, event)
            if self.next_seq is not None:
                self._arm_gap_fill()
            return
        if seq < self.next_seq:
            return
        self._dispatch(seq, text, event)
        while self.next_seq in self.ahead:
            self._dispatch(self.next_seq, *self.ahead.pop(self.next_seq))
        if not self.ahead and self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None

    def _dispatch(self, seq: int, text: str, event: Event) -> None:
        self.next_seq = seq + 1
        for conn in list(self.conns):
            conn.deliver(self.cid, seq, text, event)

    def broadcast(self, text: str, event: Event) -> None:
        for conn in list(self.conns):
            if self.cid in conn.conversations:
                conn.broadcast(text, event)

    def _arm_gap_fill(self) -> None:
        if self._gap_timer is None and not self._filling:
            loop = asyncio.get_running_loop()
            self._gap_timer = loop.call_later(self.hub.gap_fill_delay, self._start_fill)

    def _start_fill(self) -> None:
        self._gap_timer = None
        if self.hub.topics.get(self.cid) is not self:  # detached meanwhile
            return
        upto = max(self.ahead, default=0) - 1
        if self.ahead or (self.next_seq is not None and self._fill_to >= self.next_seq):
            self.hub.spawn(self.fill(upto))

    async def fill(self, upto: int) -> None:
        """Read events next_seq..upto from Postgres (a lost or late publish).

        A fill asked for while one runs extends it; a failed read is retried after the gap
        fill delay, so a resync is never lost to a concurrent gap fill or a Postgres blip.
        """
        self._fill_to = max(self._fill_to, upto)
        if self.next_seq is None or self._filling:
            return
        self._filling = True
        failed = False
        try:
            while self.next_seq <= self._fill_to:
                first, last = self.next_seq, self._fill_to
                metrics.GAP_FILLS.inc()
                try:
                    events = await self.hub.stores.messages.range(self.cid, first, last)
                except Exception:
                    metrics.ERRORS.labels("gap_fill").inc()
                    log.warning("gap fill failed; retrying", extra={"conversation_id": self.cid})
                    failed = True
                    break
                for event in events:
                    self.accept(event["seq"], dumps(event), event)
                if self.next_seq == first:  # nothing there (e.g. deleted): stop asking
                    self._fill_to = first - 1
                    break
        finally:
            self._filling = False
        if self.ahead or failed:
            self._arm_gap_fill()


class Hub:
    def __init__(
        self,
        redis: aioredis.Redis,
        stores: Stores,
        gap_fill_delay: float,
        publish_timeout_s: float = 0.5,
        on_resync: Callable[[list[Subscriber]], Awaitable[None]] | None = None,
    ) -> None:
        # After a subscriber outage the per-user messages sent meanwhile (a token revoke) are
        # gone: the caller re-checks every local subscriber instead.
        self.on_resync = on_resync
        self.redis = redis
        self.stores = stores
        self.gap_fill_delay = gap_fill_delay
        self.topics: dict[int, Topic] = {}
        self.kinds: dict[int, str] = {}  # conversation kinds never change: a safe cache
        self.users: dict[int, set[Subscriber]] = {}
        self.connections: set[Subscriber] = set()
        self._pubsub = redis.pubsub()
        self._pongs: dict[bytes, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader: asyncio.Task[None] | None = None
        # One queue, one pipeline at a time: this worker's publishes go out in commit order.
        self.outbox = Outbox(redis, publish_timeout_s)
        self._publish_timeout_s = publish_timeout_s

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self._pubsub.subscribe(CONTROL_CHANNEL)
        self._reader = asyncio.create_task(self._read_loop())
        await self._confirm()
        self.outbox.start()

    async def stop(self, grace_s: float = 1.0) -> None:
        await self.outbox.stop(grace_s)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for task in list(self._tasks):
            task.cancel()
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- publishing (always after COMMIT) ------------------------------------------------
    async def publish(self, event: Event) -> None:
        """Queue `event` for its conversation's channel; waits a bounded time (outbox.py).

        A publish Redis does not take now is retried until it does, in commit order.
        """
        await self.outbox.publish([(conversation_channel(event["conversation_id"]), dumps(event))])

    async def publish_state(self, event: Event) -> None:
        """An ephemeral state event (typing): one bounded attempt, never queued or retried,
        since a late one would be wrong rather than useful."""
        try:
            async with asyncio.timeout(self._publish_timeout_s):
                await self.redis.publish(conversation_channel(event["conversation_id"]), dumps(event))
        except (TimeoutError, redis.exceptions.RedisError):
            log.info("ephemeral publish dropped", extra={"conversation_id": event["conversation_id"]})

    async def publish_to_users(self, user_ids: list[int], message: dict[str, Any]) -> None:
        payload = dumps(message)
        await self.outbox.publish([(user_channel(uid), payload) for uid in user_ids])

    # -- subscriptions -------------------------------------------------------------------
    async def _confirm(self) -> None:
        token = secrets.token_hex(8).encode()
        future = asyncio.get_running_loop().create_future()
        self._pongs[token] = future
        try:
            await self._pubsub.ping(token)
            await asyncio.wait_for(future, timeout=10)
        finally:
            self._pongs.pop(token, None)

    async def add_connection(self, conn: Subscriber) -> None:
        """Returns once the user's channel is subscribed: what is published from then on reaches `conn`."""
        self.connections.add(conn)
        self.users.setdefault(conn.user_id, set()).add(conn)
        # Every connection confirms its own SUBSCRIBE (a repeat is harmless): the one sent for
        # the user's other connection may still be on its way.
        await self._pubsub.subscribe(user_channel(conn.user_id))
        await self._confirm()

    def remove_connection(self, conn: Subscriber) -> None:
        self.connections.discard(conn)
        self.detach(conn, list(conn.conversations))
        conns = self.users.get(conn.user_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.users[conn.user_id]
                self.spawn(self._unsubscribe(user_channel(conn.user_id)))

    async def attach(self, conn: Subscriber, cids: list[int]) -> None:
        """Deliver live events of `cids` to `conn`; returns once every topic has a baseline."""
        new = [cid for cid in cids if cid not in self.topics]
        for cid in new:
            self.topics[cid] = Topic(self, cid)
        for cid in cids:
            self.topics[cid].conns.add(conn)
        if new:
            try:
                await self._pubsub.subscribe(*(conversation_channel(cid) for cid in new))
                await self._confirm()
                last = await self.stores.conversations.last_seqs(new)
            except Exception as exc:
                for cid in new:
                    topic = self.topics.get(cid)
                    if topic is not None and not topic.ready.done():
                        topic.ready.set_exception(exc)
                        topic.ready.exception()  # mark retrieved
                        del self.topics[cid]
                raise
            for cid in new:
                self.topics[cid].start(last.get(cid, 0))
        await asyncio.gather(*(self.topics[cid].ready for cid in cids if cid in self.topics))

    def dispatched(self, cids: list[int]) -> dict[int, int]:
        """The last seq each (attached, hence ready) topic has handed to its connections."""
        return {
            cid: topic.next_seq - 1
            for cid in cids
            if (topic := self.topics.get(cid)) is not None and topic.next_seq is not None
        }

    def detach_one(self, conn: Subscriber, cid: int) -> None:
        self.detach(conn, [cid])

    def detach(self, conn: Subscriber, cids: list[int]) -> None:
        for cid in cids:
            topic = self.topics.get(cid)
            if topic is None:
                continue
            topic.conns.discard(conn)
            if not topic.conns and topic.ready.done():
                del self.topics[cid]
                self.spawn(self._unsubscribe(conversation_channel(cid)))

    async def _unsubscribe(self, channel: str) -> None:
        # Re-check: a new connection may have needed the channel again in the meantime.
        kind, _, ident = channel.rpartition(":")
        still = int(ident) in (self.topics if kind == "chatd:c" else self.users)
        if not still:
            with contextlib.suppress(redis.exceptions.RedisError):
                await self._pubsub.unsubscribe(channel)

    # -- the subscriber ------------------------------------------------------------------
    async def _read_loop(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("redis subscriber disconnected; reconnecting", exc_info=True)
                await self._reconnect()
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
                async with asyncio.timeout(RECONNECT_TIMEOUT_S):  # e.g. a hung server
                    await self._pubsub.connect()  # type: ignore[no-untyped-call]
                    await self._pubsub.ping(RESYNC)
            except Exception:
                backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_S)
                continue
            log.info("redis subscriber reconnected")
            return

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pong":
            token = message["data"]
            if token == RESYNC:
                self.spawn(self.resync())
            elif (future := self._pongs.get(token)) is not None and not future.done():
                future.set_result(None)
            return
        if kind != "message":
            return
        channel = message["channel"].decode()
        if channel == CONTROL_CHANNEL:
            if message["data"] == RESYNC:  # some worker dropped publishes it could not make
                self.spawn(self.resync())
            return
        prefix, _, ident = channel.rpartition(":")
        data: bytes = message["data"]
        if prefix == "chatd:c":
            topic = self.topics.get(int(ident))
            if topic is not None:
                event = orjson.loads(data)
                if event["type"] == "message":
                    topic.accept(event["seq"], data.decode(), event)
                else:  # receipts, presence: state, not part of the sequenced stream
                    topic.broadcast(data.decode(), event)
        elif prefix == "chatd:u":
            payload = orjson.loads(data)
            for conn in list(self.users.get(int(ident), ())):
                conn.notice(payload)

    async def resync(self) -> None:
        """After the subscriber reconnects, read whatever was published while it was away."""
        conns = [c for c in self.connections if c.close_code is None]
        if conns and self.on_resync is not None:
            try:
                await self.on_resync(conns)
            except Exception:
                log.warning("resync of connections failed", exc_info=True)
        topics = [t for t in self.topics.values() if t.next_seq is not None]
        if not topics:
            return
        metrics.RESYNCS.inc()
        try:
            last = await self.stores.conversations.last_seqs([t.cid for t in topics])
        except Exception:
            metrics.ERRORS.labels("resync").inc()
            log.warning("resync failed", exc_info=True)
            return
        for topic in topics:
            await topic.fill(last.get(topic.cid, 0))
