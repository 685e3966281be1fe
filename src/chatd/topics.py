"""One conversation's ordered event stream in this process (a ``Topic`` per followed conversation).

Publishes from different workers may arrive out of order, and a worker may die between COMMIT
and PUBLISH, so an event ahead of the expected seq waits briefly (`gap_fill_delay`) and the gap
is then read from Postgres. State events (receipts, presence, typing) are not sequenced: they go
to every connection that already follows the conversation.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from chatd import frames, metrics
from chatd.connection import Event, dumps
from chatd.storage import Stores
from chatd.storage.records import MEMBERSHIP, Kind
from chatd.subscriber import Subscriber
from chatd.tasks import Spawn

log = logging.getLogger("chatd.fanout")


@dataclass(frozen=True)
class TopicShared:
    """What every topic of a process shares: where a gap is read from, who runs the fill, and
    the registry of live topics (a topic detached meanwhile does not fill)."""

    stores: Stores
    spawn: Spawn
    gap_fill_delay: float
    presence_max_group_size: int  # membership changes up to this size change who follows whom
    live: dict[int, Topic]


class Topic:
    """This process's ordered view of one conversation's event stream."""

    def __init__(self, shared: TopicShared, cid: int) -> None:
        self.shared = shared
        self.cid = cid
        self.conns: set[Subscriber] = set()
        self.next_seq: int | None = None  # None until the baseline is read
        self.member_count = 0  # as of next_seq - 1
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ahead: dict[int, tuple[str, Event]] = {}
        self._gap_timer: asyncio.TimerHandle | None = None
        self._filling = False
        self._fill_to = 0  # the highest seq a fill was asked for

    def start(self, last_seq: int, member_count: int = 0) -> None:
        self.next_seq = last_seq + 1
        self.member_count = member_count
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
        conns = list(self.conns)
        for conn in conns:
            conn.deliver(self.cid, seq, text, event)
        if event.get("kind") in MEMBERSHIP:
            before = self.member_count
            change = len(event.get("user_ids") or ())
            self.member_count += change if event["kind"] == Kind.MEMBERS_ADDED else -change
            if min(before, self.member_count) <= self.shared.presence_max_group_size:
                for conn in conns:  # a removed member's too: it may follow fewer users now
                    conn.members_changed(self.cid)

    def broadcast(self, text: str, event: Event) -> None:
        for conn in list(self.conns):
            if self.cid in conn.conversations:
                conn.broadcast(text, event)

    def _arm_gap_fill(self) -> None:
        if self._gap_timer is None and not self._filling:
            loop = asyncio.get_running_loop()
            self._gap_timer = loop.call_later(self.shared.gap_fill_delay, self._start_fill)

    def _start_fill(self) -> None:
        self._gap_timer = None
        if self.shared.live.get(self.cid) is not self:  # detached meanwhile
            return
        upto = max(self.ahead, default=0) - 1
        if self.ahead or (self.next_seq is not None and self._fill_to >= self.next_seq):
            self.shared.spawn(self.fill(upto))

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
                    stored = await self.shared.stores.messages.range(self.cid, first, last)
                except Exception:
                    metrics.ERRORS.labels("gap_fill").inc()
                    log.warning("gap fill failed; retrying", extra={"conversation_id": self.cid})
                    failed = True
                    break
                for event in map(frames.message, stored):
                    self.accept(event["seq"], dumps(event), event)
                if self.next_seq == first:  # nothing there (e.g. deleted): stop asking
                    self._fill_to = first - 1
                    break
        finally:
            self._filling = False
        if self.ahead or failed:
            self._arm_gap_fill()
