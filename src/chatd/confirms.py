"""Delivery confirmations (`received`, docs/protocol.md §4.8), gathered over all of a worker's
connections for BATCH_S and applied together: one Redis script call per batch moves every
pointer in it, whatever the number of connections confirming, and a group's changed range is
widened once per batch (the `receipts` push is coalesced per receipt_push_interval as for
reads). A connection's repeated confirmations of one conversation in a batch count once (the
highest). What the batch script cannot decide alone (state to load from Postgres, a removal
to check) goes the one-by-one way, Receipts.received.

A session awaits its last confirmation's batch before it answers any later frame, so a reply
still means every earlier frame took effect (§7)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from chatd import keyspace
from chatd.fanout import Hub
from chatd.readstate import (
    MARK_FN,
    MOVED,
    UNCHANGED,
    ReadState,
    dirty_key,
    gone_key,
    meta_key,
    room_key,
    user_key,
)
from chatd.receipts import Receipts
from chatd.tasks import Spawn

log = logging.getLogger("chatd.receipts")
BATCH_S = 0.02

# KEYS: room, user, dirty, gone, meta of each confirmation; ARGV: uid, cid, seq, evidence of
# each -> status, previous, visible of each (readstate.MARK_FN; taking part not known: -4).
# On a cluster, one call per conversation shard of the batch (its keys in one slot).
_MARK_MANY = (
    MARK_FN
    + """
local out = {}
for i = 0, #ARGV / 4 - 1 do
  local k, a = 5 * i, 4 * i
  local r = mark(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5],
                 ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], '')
  out[3 * i + 1], out[3 * i + 2], out[3 * i + 3] = r[1], r[2], r[3]
end
return out
"""
)

Key = tuple[str, int]  # connection id, conversation
Failures = dict[Key, BaseException]


@dataclass
class Confirmation:
    uid: int
    cid: int
    seq: int
    evidence: int  # a seq this connection was given (readstate.ReadState.mark)


class Confirmations:
    def __init__(
        self, receipts: Receipts, delivered: ReadState, hub: Hub, timeout_s: float | None, spawn: Spawn
    ) -> None:
        self._receipts = receipts
        self._delivered = delivered
        self._hub = hub
        self._spawn = spawn
        self._timeout_s = timeout_s
        self._script = delivered.redis.register_script(_MARK_MANY)
        self._batch: dict[Key, Confirmation] = {}
        self._done: asyncio.Future[Failures] | None = None

    def submit(self, conn_id: str, uid: int, cid: int, seq: int, evidence: int) -> asyncio.Future[Failures]:
        """Confirm `uid` got `cid` up to `seq` (at most `evidence`, what the connection was
        given); the future tells, once the batch is applied, which confirmations failed."""
        item = self._batch.get((conn_id, cid))
        if item is None:
            self._batch[(conn_id, cid)] = Confirmation(uid, cid, seq, evidence)
        else:
            item.seq, item.evidence = max(item.seq, seq), max(item.evidence, evidence)
        if self._done is None:
            loop = asyncio.get_running_loop()
            self._done = loop.create_future()
            loop.call_later(BATCH_S, self._start)
        return self._done

    def _start(self) -> None:
        batch, done = self._batch, self._done
        self._batch, self._done = {}, None
        assert done is not None
        self._spawn(self._run(batch, done))

    async def _run(self, batch: dict[Key, Confirmation], done: asyncio.Future[Failures]) -> None:
        failures: Failures = {}
        try:
            failures = await self._apply(batch)
        except BaseException as exc:  # cancelled too (shutdown): no session waits forever
            failures = dict.fromkeys(batch, exc)
            if not isinstance(exc, Exception):
                raise
            log.warning("delivery confirmations failed", extra={"count": len(batch)}, exc_info=True)
        finally:
            if not done.done():
                done.set_result(failures)

    async def _apply(self, batch: dict[Key, Confirmation]) -> Failures:
        groups: dict[str, list[tuple[Key, Confirmation]]] = {}  # by conversation shard
        for key, c in batch.items():
            groups.setdefault(keyspace.conv_shard(c.cid), []).append((key, c))
        calls: list[tuple[list[str], list[int]]] = []
        for group in groups.values():
            keys: list[str] = []
            args: list[int] = []
            for _, c in group:
                keys += [room_key(c.cid, self._delivered.keys), user_key(c.uid, c.cid, self._delivered.keys)]
                keys += [dirty_key(c.cid, self._delivered.keys), gone_key(c.cid), meta_key(c.uid, c.cid)]
                args += [c.uid, c.cid, c.seq, c.evidence]
            calls.append((keys, args))
        async with asyncio.timeout(self._timeout_s):
            replies = await keyspace.script_calls(self._delivered.redis, self._script, calls)
        moved: dict[int, list[tuple[int, int, int]]] = {}  # cid -> (uid, previous, seq) shown to others
        alone: list[tuple[Key, Confirmation]] = []
        for group, flat in zip(groups.values(), replies, strict=True):
            for index, (key, c) in enumerate(group):
                status, previous, visible = (int(v) for v in flat[3 * index : 3 * index + 3])
                if status == MOVED and visible:
                    moved.setdefault(c.cid, []).append((c.uid, previous, c.seq))
                elif status not in (MOVED, UNCHANGED):  # rare (a user's first): as a lone `received`
                    alone.append((key, c))
        outcomes = await asyncio.gather(
            *(self._receipts.received(c.uid, c.cid, c.seq, c.evidence) for _, c in alone),
            *(self._receipts.delivered_moved(cid, marks) for cid, marks in moved.items()),
            return_exceptions=True,
        )
        failures: Failures = {}
        for (key, _), outcome in zip(alone, outcomes, strict=False):
            if isinstance(outcome, BaseException):
                failures[key] = outcome
        for outcome in outcomes[len(alone) :]:
            if isinstance(outcome, BaseException):
                log.warning("delivered not pushed", exc_info=outcome)
        return failures
