"""Cross-worker fan-out: two publish APIs after commit, one Redis subscriber per process.

Channels: ``chatd:c:<conversation>`` carries a conversation's events as the exact JSON frames
clients receive; ``chatd:u:<user>`` carries per-user notices (notices.py); ``chatd:p:<user>``
carries the user's presence changes, subscribed by each worker for the users its sessions
follow (sessions/following.py): a change is one publish, whatever the number of the user's
conversations. A notice for more than
USERS_PER_CHANNEL users goes once per USERS_PER_NOTICE of them on ``chatd:users``, which every
worker follows, with the user ids in it: a group naming 10,000 users is a dozen publishes, not
10,000 (which would also overflow the outbox and cost every worker a resync).

Everything published goes through one of two APIs, each with one error policy:

- ``sequenced``: events whose durable source is Postgres (messages, membership events,
  per-user notices such as ``conversation_added`` or a token revoke). Queued in commit order
  in the outbox (outbox.py) and retried until Redis takes them; past the outbox's limit the
  oldest are dropped and every worker resyncs. A subscriber that was away re-reads what it
  missed: each followed conversation's tail (``Topic.fill``) and the per-user notices, rebuilt
  from their source (``notices.rebuild``).
- ``ephemeral``: state where the latest value wins (presence, typing, read counts, the own
  read pointer). Queued, coalesced by key, one bounded attempt, dropped and counted on failure
  (ephemeral.py); the caller never waits.

A ``Topic`` (topics.py) turns a conversation channel back into a gapless, ordered stream.
Subscribing is confirmed (SUBSCRIBE then PING; the PONG comes back after the subscription is
active) before the baseline seq is read, which closes the subscribe-vs-query race.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from chatd import metrics, notices
from chatd.connection import Event, dumps
from chatd.ephemeral import Ephemeral
from chatd.notices import Notice
from chatd.outbox import CONTROL_CHANNEL, RESYNC, Outbox
from chatd.storage import Stores
from chatd.subscriber import Subscriber
from chatd.topics import Topic

log = logging.getLogger("chatd.fanout")

RECONNECT_BACKOFF_MAX_S = 1.0
RECONNECT_TIMEOUT_S = 5.0
USERS_CHANNEL = "chatd:users"
USERS_PER_CHANNEL = 32  # up to this many recipients, a notice goes on each one's own channel
USERS_PER_NOTICE = 1000  # beyond it, on USERS_CHANNEL, this many user ids per publish
SUBSCRIBER_WAIT_S = 10.0  # a session's subscribe: for the subscriber to be back, and confirmed


def conversation_channel(cid: int) -> str:
    return f"chatd:c:{cid}"


def user_channel(uid: int) -> str:
    return f"chatd:u:{uid}"


def presence_channel(uid: int) -> str:
    return f"chatd:p:{uid}"


class Hub:
    def __init__(
        self,
        redis: aioredis.Redis,
        subscriber: aioredis.Redis,
        stores: Stores,
        gap_fill_delay: float,
        publish_timeout_s: float = 0.5,
        on_resync: Callable[[list[Subscriber]], Awaitable[None]] | None = None,
        presence_max_group_size: int = 100,
    ) -> None:
        # After a subscriber outage a token revoke sent meanwhile is gone, and no durable
        # source holds it: the caller re-checks every local subscriber's token.
        self.on_resync = on_resync
        self.redis = redis
        self.stores = stores
        self.gap_fill_delay = gap_fill_delay
        # A membership change in a conversation this small (before or after) can change whose
        # presence its members follow (Topic tells its subscribers).
        self.presence_max_group_size = presence_max_group_size
        self.topics: dict[int, Topic] = {}
        self.users: dict[int, set[Subscriber]] = {}
        self.followers: dict[int, set[Subscriber]] = {}  # user -> sessions following their presence
        self.connections: set[Subscriber] = set()
        # The subscriber's own client (one connection, never reconnected by redis-py: the reader
        # task does it, then resyncs). Commands from sessions wait while it is away (`_up`) and
        # never run during a reconnect (`_lock`): two tasks connecting it at once break it.
        self.subscriber = subscriber
        self._pubsub = subscriber.pubsub()
        self._up = asyncio.Event()
        self._lock = asyncio.Lock()
        self._pongs: dict[bytes, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader: asyncio.Task[None] | None = None
        # One queue, one pipeline at a time: this worker's publishes go out in commit order.
        self.outbox = Outbox(redis, publish_timeout_s)
        self.ephemeral_state = Ephemeral(redis, publish_timeout_s)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self._pubsub.subscribe(CONTROL_CHANNEL, USERS_CHANNEL)
        self._up.set()
        self._reader = asyncio.create_task(self._read_loop())
        await self._confirm()
        self.outbox.start()
        self.ephemeral_state.start()

    async def stop(self, grace_s: float = 1.0) -> None:
        await self.outbox.stop(grace_s)
        await self.ephemeral_state.stop(grace_s)
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

    # -- the two publish APIs (always after COMMIT) ---------------------------------------
    async def sequenced(self, channels: Sequence[str], payload: dict[str, Any]) -> None:
        """Publish `payload` to `channels` in commit order; waits a bounded time (outbox.py).

        What Redis does not take now is retried until it does; a subscriber that was away
        rebuilds it from Postgres.
        """
        text = dumps(payload)
        await self.outbox.publish([(channel, text) for channel in channels])

    def ephemeral(
        self, channels: Sequence[str], payload: dict[str, Any], key: Hashable | None = None
    ) -> asyncio.Future[bool]:
        """Queue `payload` for `channels` and return at once; a later call with the same `key`
        replaces it if not yet sent. The future says whether Redis took it (ephemeral.py)."""
        text = dumps(payload)
        return self.ephemeral_state.publish([(channel, text) for channel in channels], key)

    # Uses of the two APIs.
    async def publish(self, event: Event) -> None:
        """A conversation's sequenced event (a message, a membership change)."""
        await self.sequenced([conversation_channel(event["conversation_id"])], event)

    async def publish_many(self, events: Sequence[Event]) -> None:
        """Conversations' sequenced events, in this order, waited for once (one connection's
        group of sends)."""
        await self.outbox.publish([(conversation_channel(e["conversation_id"]), dumps(e)) for e in events])

    async def publish_to_users(self, user_ids: list[int], notice: Notice) -> None:
        """A sequenced per-user notice (notices.py says which are, and their source).

        Many recipients share publishes on USERS_CHANNEL (each worker picks its own users
        out), so the outbox holds a few entries for any number of them."""
        if len(user_ids) <= USERS_PER_CHANNEL:
            await self.sequenced([user_channel(uid) for uid in user_ids], notice)
            return
        chunks = [user_ids[i : i + USERS_PER_NOTICE] for i in range(0, len(user_ids), USERS_PER_NOTICE)]
        await self.outbox.publish([(USERS_CHANNEL, dumps({"users": c, "notice": notice})) for c in chunks])

    def publish_state(self, event: Event, key: Hashable | None = None) -> None:
        """A conversation's state event (typing, read counts): dropped if Redis fails."""
        self.ephemeral([conversation_channel(event["conversation_id"])], event, key)

    def notify_state(self, user_ids: list[int], notice: Notice, key: Hashable | None = None) -> None:
        """An ephemeral per-user notice (the own read pointer moved elsewhere)."""
        self.ephemeral([user_channel(uid) for uid in user_ids], notice, key)

    # -- subscriptions -------------------------------------------------------------------
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
        token = secrets.token_hex(8).encode()
        future = asyncio.get_running_loop().create_future()
        self._pongs[token] = future
        try:
            async with asyncio.timeout(SUBSCRIBER_WAIT_S):
                await self._command(lambda: self._pubsub.ping(token))
                await future
        finally:
            self._pongs.pop(token, None)

    async def add_connection(self, conn: Subscriber) -> None:
        """Returns once the user's channel is subscribed: what is published from then on reaches `conn`."""
        self.connections.add(conn)
        self.users.setdefault(conn.user_id, set()).add(conn)
        # Every connection confirms its own SUBSCRIBE (a repeat is harmless): the one sent for
        # the user's other connection may still be on its way.
        channel = user_channel(conn.user_id)
        await self._command(lambda: self._pubsub.subscribe(channel))
        await self._confirm()

    def remove_connection(self, conn: Subscriber) -> None:
        self.connections.discard(conn)
        self.detach(conn, list(conn.conversations))
        self.unfollow(conn, list(conn.followed))
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
                channels = [conversation_channel(cid) for cid in new]
                await self._command(lambda: self._pubsub.subscribe(*channels))
                await self._confirm()
                heads = await self.stores.conversations.heads(new)
            except Exception as exc:
                for cid in new:
                    topic = self.topics.get(cid)
                    if topic is not None and not topic.ready.done():
                        topic.ready.set_exception(exc)
                        topic.ready.exception()  # mark retrieved
                        del self.topics[cid]
                raise
            for cid in new:
                self.topics[cid].start(*heads.get(cid, (0, 0)))
        await asyncio.gather(*(self.topics[cid].ready for cid in cids if cid in self.topics))

    def dispatched(self, cids: list[int]) -> dict[int, int]:
        """The last seq each (attached, hence ready) topic has handed to its connections."""
        return {
            cid: topic.next_seq - 1
            for cid in cids
            if (topic := self.topics.get(cid)) is not None and topic.next_seq is not None
        }

    def detach(self, conn: Subscriber, cids: list[int]) -> None:
        for cid in cids:
            topic = self.topics.get(cid)
            if topic is None:
                continue
            topic.conns.discard(conn)
            if not topic.conns and topic.ready.done():
                del self.topics[cid]
                self.spawn(self._unsubscribe(conversation_channel(cid)))

    async def follow(self, conn: Subscriber, uids: Iterable[int]) -> None:
        """Deliver the presence changes of `uids` to `conn`; returns once they are subscribed
        (each call confirms: another session's SUBSCRIBE of the same user may be on its way)."""
        if conn not in self.connections:  # it ended meanwhile
            return
        new, asked = [], False
        for uid in uids:
            asked = True
            watchers = self.followers.setdefault(uid, set())
            if not watchers:
                new.append(uid)
            watchers.add(conn)
        if new:
            channels = [presence_channel(uid) for uid in new]
            await self._command(lambda: self._pubsub.subscribe(*channels))
        if asked:
            await self._confirm()

    def unfollow(self, conn: Subscriber, uids: Iterable[int]) -> None:
        for uid in uids:
            watchers = self.followers.get(uid)
            if watchers is None:
                continue
            watchers.discard(conn)
            if not watchers:
                del self.followers[uid]
                self.spawn(self._unsubscribe(presence_channel(uid)))

    async def _unsubscribe(self, channel: str) -> None:
        # Re-check: a new connection may have needed the channel again in the meantime.
        kind, _, ident = channel.rpartition(":")
        held: dict[str, Collection[int]] = {"chatd:c": self.topics, "chatd:u": self.users}
        still = int(ident) in held.get(kind, self.followers)
        if not still:
            with contextlib.suppress(redis.exceptions.RedisError, TimeoutError):
                await self._command(lambda: self._pubsub.unsubscribe(channel))

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
        if channel == USERS_CHANNEL:
            shared = orjson.loads(message["data"])
            for uid in shared["users"]:
                for conn in list(self.users.get(uid, ())):
                    conn.notice(shared["notice"])
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
        elif prefix == "chatd:p":
            watchers = list(self.followers.get(int(ident), ()))
            if watchers:
                text, event = data.decode(), orjson.loads(data)
                for conn in watchers:
                    conn.presence(text, event)

    async def resync(self) -> None:
        """After the subscriber reconnects, recover whatever was published while it was away.

        Token revokes first (the session layer re-checks every token), then each followed
        conversation's tail, then the per-user notices rebuilt from Postgres: after the fills,
        so that a removal and re-addition while away is a `members_removed` then a fresh
        `conversation_added`.
        """
        metrics.RESYNCS.inc()
        conns = self._live()
        if conns and self.on_resync is not None:
            try:
                await self.on_resync(conns)
            except Exception:
                metrics.ERRORS.labels("resync").inc()
                log.warning("resync of connections failed", exc_info=True)
        topics = [t for t in self.topics.values() if t.next_seq is not None]
        if topics:
            try:
                last = await self.stores.conversations.last_seqs([t.cid for t in topics])
            except Exception:
                metrics.ERRORS.labels("resync").inc()
                log.warning("resync failed", exc_info=True)
                last = {}
            for topic in topics:
                if topic.cid in last:
                    await topic.fill(last[topic.cid])
        conns = self._live()
        if not conns:
            return
        try:
            missed = await notices.rebuild(self.stores.notices, conns)
        except Exception:
            metrics.ERRORS.labels("resync").inc()
            log.warning("rebuilding per-user notices failed", exc_info=True)
            return
        for conn, notice in missed:
            if conn.close_code is None:
                conn.notice(notice)

    def _live(self) -> list[Subscriber]:
        return [c for c in self.connections if c.close_code is None]
