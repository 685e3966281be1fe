"""Cross-worker fan-out: two publish APIs after commit, one broker subscriber per process.

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

The hub talks to a ``Broker`` (broker.py), never to Redis: redis_broker.py in production,
memory_broker.py in fast tests. A ``Topic`` (topics.py) turns a conversation channel back into
a gapless, ordered stream; a subscribe returns once it is active, before the baseline seq is
read, which closes the subscribe-vs-query race.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Sequence
from typing import Any

import orjson

from chatd import metrics, notices
from chatd.broker import Broker
from chatd.connection import Event, dumps
from chatd.notices import Notice
from chatd.storage import Stores
from chatd.subscriber import Subscriber
from chatd.tasks import Spawn
from chatd.topics import Topic, TopicShared

log = logging.getLogger("chatd.fanout")

USERS_CHANNEL = "chatd:users"
USERS_PER_CHANNEL = 32  # up to this many recipients, a notice goes on each one's own channel
USERS_PER_NOTICE = 1000  # beyond it, on USERS_CHANNEL, this many user ids per publish


def conversation_channel(cid: int) -> str:
    return f"chatd:c:{cid}"


def user_channel(uid: int) -> str:
    return f"chatd:u:{uid}"


def presence_channel(uid: int) -> str:
    return f"chatd:p:{uid}"


class Hub:
    def __init__(
        self,
        broker: Broker,
        stores: Stores,
        spawn: Spawn,
        gap_fill_delay: float,
        on_resync: Callable[[list[Subscriber]], Awaitable[None]] | None = None,
        presence_max_group_size: int = 100,
    ) -> None:
        # After a subscriber outage a token revoke sent meanwhile is gone, and no durable
        # source holds it: the caller re-checks every local subscriber's token.
        self.on_resync = on_resync
        self.broker = broker
        self.stores = stores
        # Its tasks (unsubscribes, the resync) belong to the runtime, which cancels them at stop.
        self._spawn = spawn
        self.topics: dict[int, Topic] = {}
        # A membership change in a conversation of up to presence_max_group_size members (before
        # or after) can change whose presence its members follow (Topic tells its subscribers).
        self._shared = TopicShared(stores, spawn, gap_fill_delay, presence_max_group_size, self.topics)
        self.users: dict[int, set[Subscriber]] = {}
        self.followers: dict[int, set[Subscriber]] = {}  # user -> sessions following their presence
        self.connections: set[Subscriber] = set()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.broker.start(self._handle, lambda: self._spawn(self.resync()))
        await self.broker.subscribe([USERS_CHANNEL])

    async def stop(self, grace_s: float = 1.0) -> None:
        await self.broker.stop(grace_s)

    # -- the two publish APIs (always after COMMIT) ---------------------------------------
    async def sequenced(self, channels: Sequence[str], payload: dict[str, Any]) -> None:
        """Publish `payload` to `channels` in commit order; waits a bounded time (outbox.py).

        What the broker does not take now is retried until it does; a subscriber that was
        away rebuilds it from Postgres.
        """
        text = dumps(payload)
        await self.broker.publish_sequenced([(channel, text) for channel in channels])

    def ephemeral(
        self, channels: Sequence[str], payload: dict[str, Any], key: Hashable | None = None
    ) -> asyncio.Future[bool]:
        """Queue `payload` for `channels` and return at once; a later call with the same `key`
        replaces it if not yet sent. The future says whether the broker took it (ephemeral.py)."""
        text = dumps(payload)
        return self.broker.publish_ephemeral([(channel, text) for channel in channels], key)

    # Uses of the two APIs.
    async def publish(self, event: Event) -> None:
        """A conversation's sequenced event (a message, a membership change)."""
        await self.sequenced([conversation_channel(event["conversation_id"])], event)

    async def publish_many(self, events: Sequence[Event]) -> None:
        """Conversations' sequenced events, in this order, waited for once (one connection's
        group of sends)."""
        messages = [(conversation_channel(e["conversation_id"]), dumps(e)) for e in events]
        await self.broker.publish_sequenced(messages)

    async def publish_to_users(self, user_ids: list[int], notice: Notice) -> None:
        """A sequenced per-user notice (notices.py says which are, and their source).

        Many recipients share publishes on USERS_CHANNEL (each worker picks its own users
        out), so the outbox holds a few entries for any number of them."""
        if len(user_ids) <= USERS_PER_CHANNEL:
            await self.sequenced([user_channel(uid) for uid in user_ids], notice)
            return
        chunks = [user_ids[i : i + USERS_PER_NOTICE] for i in range(0, len(user_ids), USERS_PER_NOTICE)]
        await self.broker.publish_sequenced(
            [(USERS_CHANNEL, dumps({"users": c, "notice": notice})) for c in chunks]
        )

    def publish_state(self, event: Event, key: Hashable | None = None) -> None:
        """A conversation's state event (typing, read counts): dropped if the broker fails."""
        self.ephemeral([conversation_channel(event["conversation_id"])], event, key)

    def notify_state(self, user_ids: list[int], notice: Notice, key: Hashable | None = None) -> None:
        """An ephemeral per-user notice (the own read pointer moved elsewhere)."""
        self.ephemeral([user_channel(uid) for uid in user_ids], notice, key)

    # -- subscriptions -------------------------------------------------------------------
    async def add_connection(self, conn: Subscriber) -> None:
        """Returns once the user's channel is subscribed: what is published from then on reaches `conn`."""
        self.connections.add(conn)
        self.users.setdefault(conn.user_id, set()).add(conn)
        # Every connection confirms its own SUBSCRIBE (a repeat is harmless): the one sent for
        # the user's other connection may still be on its way.
        await self.broker.subscribe([user_channel(conn.user_id)])

    def remove_connection(self, conn: Subscriber) -> None:
        self.connections.discard(conn)
        self.detach(conn, list(conn.conversations))
        self.unfollow(conn, list(conn.followed))
        conns = self.users.get(conn.user_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.users[conn.user_id]
                self._spawn(self._unsubscribe(user_channel(conn.user_id)))

    async def attach(self, conn: Subscriber, cids: list[int]) -> None:
        """Deliver live events of `cids` to `conn`; returns once every topic has a baseline."""
        new = [cid for cid in cids if cid not in self.topics]
        for cid in new:
            self.topics[cid] = Topic(self._shared, cid)
        for cid in cids:
            self.topics[cid].conns.add(conn)
        if new:
            try:
                await self.broker.subscribe([conversation_channel(cid) for cid in new])
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
                self._spawn(self._unsubscribe(conversation_channel(cid)))

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
        if asked:
            await self.broker.subscribe([presence_channel(uid) for uid in new])

    def unfollow(self, conn: Subscriber, uids: Iterable[int]) -> None:
        for uid in uids:
            watchers = self.followers.get(uid)
            if watchers is None:
                continue
            watchers.discard(conn)
            if not watchers:
                del self.followers[uid]
                self._spawn(self._unsubscribe(presence_channel(uid)))

    async def _unsubscribe(self, channel: str) -> None:
        # Re-check: a new connection may have needed the channel again in the meantime.
        kind, _, ident = channel.rpartition(":")
        held: dict[str, Collection[int]] = {"chatd:c": self.topics, "chatd:u": self.users}
        if int(ident) not in held.get(kind, self.followers):
            await self.broker.unsubscribe(channel)

    # -- what the broker receives --------------------------------------------------------
    def _handle(self, channel: str, data: bytes) -> None:
        if channel == USERS_CHANNEL:
            shared = orjson.loads(data)
            for uid in shared["users"]:
                for conn in list(self.users.get(uid, ())):
                    conn.notice(shared["notice"])
            return
        prefix, _, ident = channel.rpartition(":")
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
