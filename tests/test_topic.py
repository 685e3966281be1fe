"""A Topic turns one conversation's publishes, in whatever order they arrive, into a gapless
stream in seq order. Fast: no Redis, no Postgres (the gap fill is never due here)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, cast

from chatd.storage import Stores
from chatd.topics import Topic, TopicShared


class Hub:
    """What a Topic shares with its process, minus the stores: a gap fill that comes due is
    recorded, not run."""

    def __init__(self) -> None:
        self.topics: dict[int, Topic] = {}
        self.fills = 0
        self.shared = TopicShared(cast(Stores, None), self.spawn, 3600.0, 100, self.topics)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.fills += 1
        coro.close()


class Conn:
    def __init__(self) -> None:
        self.seqs: list[int] = []

    def deliver(self, cid: int, seq: int, text: str, event: dict[str, Any]) -> None:
        assert text == f"m{seq}" and event["seq"] == seq
        self.seqs.append(seq)


def topic(last_seq: int | None) -> tuple[Topic, Conn, Hub]:
    hub, conn = Hub(), Conn()
    t = Topic(hub.shared, 7)
    hub.topics[7] = t
    t.conns.add(cast(Any, conn))
    if last_seq is not None:
        t.start(last_seq)
    return t, conn, hub


def accept(t: Topic, *seqs: int) -> None:
    for seq in seqs:
        t.accept(seq, f"m{seq}", {"seq": seq})


async def test_out_of_order_events_are_delivered_in_seq_order_once() -> None:
    t, conn, hub = topic(0)
    accept(t, 3, 1)
    assert conn.seqs == [1]  # 3 waits for 2
    accept(t, 2, 2, 1, 5, 4, 3)
    assert conn.seqs == [1, 2, 3, 4, 5]
    assert not t.ahead and hub.fills == 0


async def test_events_before_the_baseline_wait_for_it_and_older_ones_are_dropped() -> None:
    t, conn, _ = topic(None)
    accept(t, 7, 6, 5)
    assert conn.seqs == []  # no baseline yet
    t.start(5)  # Postgres says 5 is the last seq this connection already has
    assert conn.seqs == [6, 7]
    accept(t, 4, 6, 8)
    assert conn.seqs == [6, 7, 8]


async def test_a_gap_is_held_and_filled_in_order_when_the_missing_event_comes() -> None:
    t, conn, _ = topic(10)
    accept(t, 12, 14, 13)
    assert conn.seqs == [] and sorted(t.ahead) == [12, 13, 14]
    accept(t, 11)
    assert conn.seqs == [11, 12, 13, 14] and not t.ahead
