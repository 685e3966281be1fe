"""What one session has handed to its client: a cursor per conversation, and state events.

Every sequenced event reaches the client through ``deliver`` (live, from the hub) or ``push``
(catch-up, from Postgres). ``cursor[cid]`` is the highest seq handed over, so an event is sent
at most once and, because both sources are gapless and ordered, never out of order. While a
conversation catches up, its live events wait in ``pending``; until `synced`, state events
wait in ``early``.
"""

from __future__ import annotations

from collections.abc import Callable

from chatd import metrics
from chatd.connection import Connection
from chatd.storage.records import Kind
from chatd.subscriber import Event


class Streams:
    __slots__ = ("_conn", "_on_leave", "cursor", "early", "pending", "presence_versions")

    def __init__(self, conn: Connection, on_leave: Callable[[int], None]) -> None:
        self._conn = conn
        self._on_leave = on_leave
        self.cursor: dict[int, int] = {}
        self.pending: dict[int, list[tuple[int, str, Event]]] = {}
        self.early: list[tuple[str, Event]] | None = []  # None once `synced` is queued
        self.presence_versions: dict[int, int] = {}

    # -- sequenced events ----------------------------------------------------------------
    def begin(self, cid: int, after: int) -> None:
        """Follow `cid` after seq `after`; live events wait until `end_catch_up`."""
        self.cursor[cid] = after
        self.pending[cid] = []

    def push(self, cid: int, seq: int, text: str, event: Event, live: bool = False) -> bool:
        """Hand over one event in seq order; False once the user has left the conversation."""
        if cid not in self.cursor:
            return False
        if seq <= self.cursor[cid]:
            return True
        self.cursor[cid] = seq
        if live and metrics.ENABLED:
            metrics.DELIVERED_LIVE.inc()
            self._conn.send_text(text, metrics.commit_time(event), metrics.DELIVERY_LATENCY)
        else:
            self._conn.send_text(text)
        if event["kind"] == Kind.MEMBERS_REMOVED and self._conn.user_id in event["user_ids"]:
            self.leave(cid)
            return False
        return True

    def deliver(self, cid: int, seq: int, text: str, event: Event) -> None:
        pending = self.pending.get(cid)
        if pending is not None:
            # Live events held during a catch-up count against the same bound as the queue.
            if len(pending) >= self._conn.queue_limit:
                self._conn.slow_consumer()
                return
            pending.append((seq, text, event))
        else:
            self.push(cid, seq, text, event, live=True)

    def end_catch_up(self, cid: int) -> None:
        for seq, text, event in self.pending.pop(cid, ()):
            if not self.push(cid, seq, text, event, live=True):
                break

    def leave(self, cid: int) -> None:
        self.cursor.pop(cid, None)
        self.pending.pop(cid, None)
        self._on_leave(cid)

    # -- state events --------------------------------------------------------------------
    def state(self, text: str, event: Event) -> None:
        """A state event (presence, receipts, typing): held until `synced`; presence
        deduplicated by version."""
        if self.early is not None:
            self.early.append((text, event))
            return
        if event["type"] == "presence":
            uid, version = event["user_id"], event["version"]
            if version <= self.presence_versions.get(uid, -1):
                return
            self.presence_versions[uid] = version
        self._conn.send_text(text)

    def release_early(self) -> None:
        """`synced` is queued: what was held goes out now, and from now on at once."""
        early, self.early = self.early or [], None
        for text, event in early:
            self.state(text, event)
