"""The in-memory broker keeps the broker contract (broker.py), and the hub works over it.

Fast: no Redis, no Postgres (the stores below are dicts). Absence is proved with a later
sentinel on the same broker: one broker receives everything in publish order.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from chatd.fanout import USERS_CHANNEL, USERS_PER_CHANNEL, Hub, conversation_channel, user_channel
from chatd.memory_broker import MemoryBroker, MemoryBus
from chatd.storage import Stores
from chatd.storage.records import Event as Stored
from chatd.storage.records import Kind
from chatd.subscriber import Event, Subscriber
from chatd.tasks import Background

WAIT_S = 5.0
CID = 7
UID = 5


class Arrivals:
    """What one receiver got, in order, and a way to wait for a later entry."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, entry: Any) -> None:
        self.got.append(entry)
        self._changed.set()

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    async def until_got(self, entry: Any) -> None:
        await self.until(lambda: entry in self.got)


class Receiver(Arrivals):
    def message(self, channel: str, data: bytes) -> None:
        self.add((channel, data.decode()))

    def resync(self) -> None:
        self.add("resync")


async def started(bus: MemoryBus, *channels: str) -> tuple[MemoryBroker, Receiver]:
    broker, receiver = MemoryBroker(bus), Receiver()
    await broker.start(receiver.message, receiver.resync)
    await broker.subscribe(channels)
    return broker, receiver


async def test_each_subscriber_gets_a_channels_messages_in_publish_order() -> None:
    bus = MemoryBus()
    (a, on_a), (b, on_b), (c, on_c) = [await started(bus, *chs) for chs in (["x"], ["x", "y"], ["y"])]
    for i in range(50):  # two publishers, interleaved, two channels per publish
        await (a if i % 2 else c).publish_sequenced([("x", f"x{i}"), ("y", f"y{i}")])
    await c.publish_sequenced([("x", "end"), ("y", "end")])
    await on_a.until_got(("x", "end"))
    await on_b.until_got(("y", "end"))
    await on_c.until_got(("y", "end"))
    xs = [("x", f"x{i}") for i in range(50)] + [("x", "end")]
    ys = [("y", f"y{i}") for i in range(50)] + [("y", "end")]
    assert on_a.got == xs
    assert on_c.got == ys
    assert on_b.got == [m for pair in zip(xs, ys, strict=True) for m in pair]
    for broker in (a, b, c):
        await broker.stop(0)


async def test_an_unsubscribed_channel_stops_at_once() -> None:
    bus = MemoryBus()
    publisher, _ = await started(bus)
    broker, receiver = await started(bus, "x", "y")
    await publisher.publish_sequenced([("x", "before")])
    await broker.unsubscribe("x")
    await publisher.publish_sequenced([("x", "after"), ("y", "end")])
    await receiver.until_got(("y", "end"))
    assert receiver.got == [("x", "before"), ("y", "end")]
    assert broker.subscribed == {"y"}
    await publisher.stop(0)
    await broker.stop(0)


async def test_an_ephemeral_value_replaces_the_unsent_one_with_its_key_in_its_place() -> None:
    bus = MemoryBus()
    broker, receiver = await started(bus, "x")
    first = broker.publish_ephemeral([("x", "v1")], key="k")
    other = broker.publish_ephemeral([("x", "other")])
    second = broker.publish_ephemeral([("x", "v2")], key="k")
    assert [await first, await other, await second] == [True, True, True]
    await broker.publish_sequenced([("x", "end")])
    await receiver.until_got(("x", "end"))
    assert receiver.got == [("x", "v2"), ("x", "other"), ("x", "end")]
    await broker.stop(0)


async def test_a_failing_receiver_does_not_stop_the_broker() -> None:
    bus = MemoryBus()
    broker, receiver = MemoryBroker(bus), Receiver()

    def picky(channel: str, data: bytes) -> None:
        if data == b"bad":
            raise ValueError(data)
        receiver.message(channel, data)

    await broker.start(picky, receiver.resync)
    await broker.subscribe(["x"])
    await broker.publish_sequenced([("x", "bad"), ("x", "good")])
    await receiver.until_got(("x", "good"))
    assert receiver.got == [("x", "good")]
    await broker.stop(0)


# -- the hub over the memory broker --------------------------------------------------------
class Conn(Arrivals):
    """A session as the hub sees it (subscriber.Subscriber)."""

    def __init__(self, user_id: int) -> None:
        super().__init__()
        self.id = f"conn-{user_id}"
        self.user_id = user_id
        self.token_hash = b"token"
        self.share_read_state = True
        self.close_code: int | None = None
        self.queued = 0
        self.conversations: set[int] = set()
        self.followed: set[int] = set()

    def deliver(self, cid: int, seq: int, text: str, event: Event) -> None:
        self.add(("message", cid, seq))

    def broadcast(self, text: str, event: Event) -> None:
        self.add((event["type"], event["conversation_id"]))

    def presence(self, text: str, event: Event) -> None:
        self.add(("presence", event["user_id"]))

    def members_changed(self, cid: int) -> None:
        pass

    def notice(self, payload: dict[str, Any]) -> None:
        self.add(("notice", payload["n"]))

    def close(self, code: int, reason: str = "") -> None:
        self.close_code = code

    async def wait_closed(self) -> None:
        pass


class Conversations:
    def __init__(self) -> None:
        self.last: dict[int, int] = {}

    async def heads(self, cids: list[int]) -> dict[int, tuple[int, int]]:
        return {cid: (self.last.get(cid, 0), 2) for cid in cids}

    async def last_seqs(self, cids: list[int]) -> dict[int, int]:
        return {cid: self.last.get(cid, 0) for cid in cids}


class Messages:
    def __init__(self) -> None:
        self.stored: list[Stored] = []

    async def range(self, cid: int, first: int, last: int) -> list[Stored]:
        return [e for e in self.stored if e.conversation_id == cid and first <= e.seq <= last]


class Notices:
    async def memberships(self, users: list[int]) -> dict[int, list[tuple[dict[str, Any], int]]]:
        return {}

    async def share_read_state(self, users: list[int]) -> dict[int, bool]:
        return {}


class FakeStores:
    def __init__(self) -> None:
        self.conversations = Conversations()
        self.messages = Messages()
        self.notices = Notices()


def stored(seq: int) -> Stored:
    at = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return Stored(seq, CID, seq, Kind.TEXT, UID, None, f"m{seq}", None, at)


def message(seq: int) -> Event:
    return {"type": "message", "conversation_id": CID, "seq": seq, "kind": "text", "body": f"m{seq}"}


@contextlib.asynccontextmanager
async def workers(
    stores: FakeStores, on_resync: Callable[[list[Subscriber]], Awaitable[None]] | None = None
) -> AsyncIterator[tuple[Hub, Hub, MemoryBroker]]:
    """Two workers' hubs on one bus; the first one's broker too."""
    bus = MemoryBus()
    first = MemoryBroker(bus)
    tasks = Background()
    hubs = [
        Hub(broker, cast(Stores, stores), tasks.spawn, gap_fill_delay=3600, on_resync=on_resync)
        for broker in (first, MemoryBroker(bus))
    ]
    for hub in hubs:
        await hub.start()
    try:
        yield hubs[0], hubs[1], first
    finally:
        for hub in hubs:
            await hub.stop(0)
        await tasks.stop()


async def test_a_hub_gets_another_hubs_publishes_in_seq_order() -> None:
    async with workers(FakeStores()) as (here, there, _):
        conn = Conn(UID)
        await here.add_connection(conn)
        await here.attach(conn, [CID])
        conn.conversations.add(CID)
        for seq in (2, 1, 3):  # published out of order: the topic restores it
            await there.publish(message(seq))
        assert await there.ephemeral(
            [conversation_channel(CID)], {"type": "receipts", "conversation_id": CID}
        )
        await there.publish_to_users([UID], {"type": "settings", "n": 1})
        many = [UID, *range(1000, 1000 + USERS_PER_CHANNEL)]  # on the shared users channel
        await there.publish_to_users(many, {"type": "settings", "n": 2})
        await conn.until_got(("notice", 2))
        assert conn.got == [
            ("message", CID, 1),
            ("message", CID, 2),
            ("message", CID, 3),
            ("receipts", CID),
            ("notice", 1),
            ("notice", 2),
        ]


async def test_a_resync_reads_what_was_never_published_then_goes_on_live() -> None:
    stores = FakeStores()
    resynced = Arrivals()

    async def recheck(conns: list[Subscriber]) -> None:
        resynced.add([c.id for c in conns])

    async with workers(stores, recheck) as (here, there, broker):
        conn = Conn(UID)
        await here.add_connection(conn)
        await here.attach(conn, [CID])
        await there.publish(message(1))
        # Seqs 2 and 3 are committed but their publishes were dropped: a worker asks for a resync.
        stores.messages.stored += [stored(2), stored(3)]
        stores.conversations.last[CID] = 3
        broker.bus.resync()
        await conn.until_got(("message", CID, 3))
        await there.publish(message(4))
        await conn.until_got(("message", CID, 4))
        assert conn.got == [("message", CID, seq) for seq in (1, 2, 3, 4)]
        assert resynced.got == [[conn.id]]


async def test_a_hub_unsubscribes_what_its_last_connection_followed() -> None:
    async with workers(FakeStores()) as (here, _, broker):
        conn = Conn(UID)
        await here.add_connection(conn)
        await here.attach(conn, [CID])
        conn.conversations.add(CID)
        assert broker.subscribed == {USERS_CHANNEL, user_channel(UID), conversation_channel(CID)}
        here.remove_connection(conn)
        # The hub unsubscribes in tasks of its own, which nothing announces: poll for it.
        async with asyncio.timeout(WAIT_S):
            while broker.subscribed != {USERS_CHANNEL}:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert here.topics == {} and here.users == {}
