"""Read and delivery receipts: pointers, counts, live read/delivered events, and the batch flush
to Postgres. Delivery pointers ("received up to seq", confirmed by a device) are kept exactly
like read pointers, by a second ReadState (readstate.DELIVERED); a read pointer moves the
delivery pointer too, so nothing is ever shown read and not delivered."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from chatd import metrics, notices, tasks
from chatd.config import Settings
from chatd.errors import ChatdError, Code
from chatd.fanout import Hub
from chatd.readstate import DELIVERED, ReadState, Removed
from chatd.storage import Stores
from chatd.storage.receipts import Target
from chatd.tasks import Spawn

log = logging.getLogger("chatd.receipts")
COUNTS_MAX = 200
KINDS_CACHE = 100_000


class Receipts:
    def __init__(
        self,
        stores: Stores,
        state: ReadState,
        hub: Hub,
        settings: Settings,
        delivered: ReadState,
        spawn: Spawn,
    ) -> None:
        self._stores = stores
        self._state = state
        self._delivered = delivered
        self._hub = hub
        self._spawn = spawn
        self._settings = settings
        self._kinds: dict[int, str] = {}  # conversation kinds never change: a safe cache

    async def _load_room(self, cid: int) -> list[tuple[int, int, int]]:
        return await self._stores.receipts.room_pointers(cid)

    async def pointers(self, uid: int, cids: list[int]) -> dict[int, int]:
        """The user's read pointers in `cids` (their conversations) and maybe others."""
        found = await self._state.user_pointers(uid, cids)
        if found is None:
            await self._state.load_user(uid, *await self._stores.receipts.user_state(uid), cids=cids)
            found = await self._state.user_pointers(uid, cids) or {}
        return found

    async def _target(self, cid: int, uid: int, seq: int) -> Target:
        target = await self._stores.receipts.target(cid, uid)
        if target is None:
            raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation")
        if seq > target.last_seq:
            raise ChatdError(
                Code.SEQ_OUT_OF_RANGE,
                f"seq {seq} is beyond the conversation's last seq {target.last_seq}",
                last_seq=target.last_seq,
            )
        return target

    async def mark(self, uid: int, cid: int, seq: int, known_last: int, origin: str = "") -> int:
        """Move `uid`'s pointer in `cid` to `seq` (never back); returns the pointer now.

        `known_last` is the highest seq this connection has delivered: marks up to it need
        no database check, and it shows the mark belongs to the current membership (a mark
        of a membership removed meanwhile is refused, `not_member`).
        """
        target = await self._target(cid, uid, seq) if seq > known_last else None

        async def took_part() -> bool:
            if target is not None:
                return target.took_part
            return await self._stores.conversations.took_part(cid, uid)

        def attempt(evidence: int) -> Awaitable[tuple[bool, int, bool]]:
            return self._state.mark(
                uid,
                cid,
                seq,
                evidence,
                took_part,
                lambda: self._load_room(cid),
                lambda: self._stores.receipts.user_state(uid),
            )

        try:
            moved, previous, visible = await attempt(target.joined_seq if target else known_last)
        except Removed:
            if target is not None:  # the membership it was checked against is gone
                raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation") from None
            # What this connection was given is older than a removal: a membership that began
            # since (removed and added back) proves itself with where it began.
            target = await self._target(cid, uid, seq)
            try:
                moved, previous, visible = await attempt(target.joined_seq)
            except Removed:
                raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation") from None
        if not moved:
            return previous
        try:  # what is read was delivered (no event of its own: `read` says more)
            await self._move_delivered(uid, cid, seq, target.joined_seq if target else known_last, took_part)
        except Removed:
            pass
        except Exception:  # the read stands; the next `received` or read moves it
            log.warning("delivery pointer not moved", extra={"conversation_id": cid}, exc_info=True)
        # Read state is ephemeral (latest value wins): a pointer only grows, and `ready` and
        # the HTTP queries give the current value to whoever missed an event.
        self._hub.notify_state([uid], notices.read_state(cid, seq, origin), key=("read_state", uid, cid))
        if visible:  # the reader shares read state and took part in the conversation (§4.8, §4.9)
            kind = target.kind if target else await self._kind(cid)
            if kind == "direct":
                event = {"type": "read", "conversation_id": cid, "user_id": uid, "seq": seq}
                self._hub.publish_state(event, key=("read", cid, uid))
            elif await self._state.widen(cid, previous + 1, seq, self._settings.receipt_push_interval_ms):
                self._spawn(self._push_counts_later(cid))
        return seq

    def _move_delivered(
        self, uid: int, cid: int, seq: int, evidence: int, took_part: Callable[[], Awaitable[bool]]
    ) -> Awaitable[tuple[bool, int, bool]]:
        return self._delivered.mark(
            uid,
            cid,
            seq,
            evidence,
            took_part,
            lambda: self._stores.delivery.room_pointers(cid),
            lambda: self._stores.delivery.user_state(uid),
        )

    async def received(self, uid: int, cid: int, seq: int, known_last: int) -> None:
        """A device of `uid` confirms it received `cid`'s events up to `seq` (cumulative; one
        frame per batch). Moves the delivery pointer (never back); the sender sees `delivered`
        (direct) or `delivered_to` in the group's coalesced `receipts`. Checked like `mark`."""
        target = await self._target(cid, uid, seq) if seq > known_last else None

        async def took_part() -> bool:
            if target is not None:
                return target.took_part
            return await self._stores.conversations.took_part(cid, uid)

        try:
            moved, previous, visible = await self._move_delivered(
                uid, cid, seq, target.joined_seq if target else known_last, took_part
            )
        except Removed:
            if target is not None:
                raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation") from None
            target = await self._target(cid, uid, seq)
            try:
                moved, previous, visible = await self._move_delivered(
                    uid, cid, seq, target.joined_seq, took_part
                )
            except Removed:
                raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation") from None
        if moved and visible:
            await self.delivered_moved(cid, [(uid, previous, seq)])

    async def delivered_moved(self, cid: int, marks: list[tuple[int, int, int]]) -> None:
        """Delivery pointers others see moved in `cid`, (user, previous, seq) each: `delivered`
        events (direct), or the group's changed range widened once (confirms.py batches)."""
        if await self._kind(cid) == "direct":
            for uid, _, seq in marks:
                event = {"type": "delivered", "conversation_id": cid, "user_id": uid, "seq": seq}
                self._hub.publish_state(event, key=("delivered", cid, uid))
            return
        lo, hi = min(previous for _, previous, _ in marks) + 1, max(seq for _, _, seq in marks)
        if await self._state.widen(cid, lo, hi, self._settings.receipt_push_interval_ms):
            self._spawn(self._push_counts_later(cid))

    async def _kind(self, cid: int) -> str:
        kind = self._kinds.get(cid)
        if kind is None:
            if len(self._kinds) >= KINDS_CACHE:
                self._kinds.clear()
            kind = self._kinds[cid] = await self._stores.receipts.kind(cid)
        return kind

    async def _push_counts_later(self, cid: int) -> None:
        """One coalesced `receipts` event per conversation per window, whatever the workers."""
        await asyncio.sleep(self._settings.receipt_push_interval_ms / 1000)
        try:
            changed = await self._state.take_range(cid)
            if changed is None:
                return
            lo, hi = max(changed[0], changed[1] - COUNTS_MAX + 1), changed[1]
            event = await self._counts_event(cid, lo, hi)
            if event["counts"]:
                self._hub.publish_state(event)
        except Exception:
            log.warning("receipt push failed", extra={"conversation_id": cid}, exc_info=True)

    async def _counts_event(self, cid: int, lo: int, hi: int) -> dict[str, Any]:
        messages = await self._stores.receipts.text_senders(cid, lo, hi)
        if not await self._state.room_loaded(cid):
            await self._state.load_room(cid, await self._load_room(cid))
        if not await self._delivered.room_loaded(cid):
            await self._delivered.load_room(cid, await self._stores.delivery.room_pointers(cid))
        counts = await self._state.counts(cid, messages) if messages else []
        delivered = await self._delivered.counts(cid, messages) if messages else []
        members = await self._stores.receipts.member_count(cid)
        return {
            "type": "receipts",
            "conversation_id": cid,
            "members": members,
            "counts": [
                # A read moves the delivery pointer too, in a second step: max() keeps a count
                # read between the two from showing fewer delivered than read.
                {"seq": seq, "read_by": count, "delivered_to": max(count, got), "of": members - 1}
                for (seq, _), count, got in zip(messages, counts, delivered, strict=True)
            ],
        }

    async def counts(self, uid: int, cid: int, lo: int, hi: int) -> dict[str, Any]:
        if hi < lo or hi - lo >= COUNTS_MAX:
            raise ChatdError(
                Code.BAD_REQUEST, f"from..to: at most {COUNTS_MAX} seqs, from <= to", field="from"
            )
        await self._stores.conversations.require_member(cid, uid)
        return await self._counts_event(cid, lo, hi)

    async def readers(self, uid: int, cid: int, seq: int) -> list[int]:
        target = await self._stores.receipts.target(cid, uid)
        if target is None:
            raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation")
        if target.member_count > self._settings.readers_list_max:
            raise ChatdError(
                Code.GROUP_TOO_LARGE,
                f"who-read lists are kept for groups of up to {self._settings.readers_list_max}",
            )
        senders = dict(await self._stores.receipts.text_senders(cid, seq, seq))
        if seq not in senders:
            raise ChatdError(Code.NOT_FOUND, "no such message")
        if not await self._state.room_loaded(cid):
            await self._state.load_room(cid, await self._load_room(cid))
        return [r for r in await self._state.readers(cid, seq) if r != senders[seq]]

    async def sync(self, uid: int, cids: list[int]) -> dict[int, tuple[int, int]]:
        """(last_read_seq, unread) per conversation, as `ready` gives them."""
        pointers = await self.pointers(uid, cids)
        mine = {cid: pointers.get(cid, 0) for cid in cids}
        unread = await self.unread(uid, mine)
        return {cid: (mine[cid], unread.get(cid, 0)) for cid in cids}

    async def unread(
        self, uid: int, pointers: dict[int, int], heads: dict[int, int] | None = None
    ) -> dict[int, int]:
        """Unread text messages per conversation after these pointers (counted up to 1000).
        `heads`: each conversation's last seq known committed (the replica may count then)."""
        return await self._stores.receipts.unread(uid, pointers, heads)

    async def read_state(self, uid: int) -> list[dict[str, int]]:
        """Every conversation's pointer and unread count, as `ready` gives them (§4.1)."""
        cids = [conv["id"] for conv in await self._stores.conversations.of_user(uid)]
        state = await self.sync(uid, cids)
        return [
            {"conversation_id": cid, "last_read_seq": state[cid][0], "unread": state[cid][1]} for cid in cids
        ]

    async def set_share(self, uid: int, share: bool) -> None:
        """Postgres first, then Redis in one step (per conversation shard on a cluster,
        readstate.py): a mark on any connection is either before it and moved by it, or after
        it and follows it (§4.8 "at once")."""
        await self._stores.receipts.set_share(uid, share)
        await self._state.set_shared(uid, share, lambda: self._stores.receipts.user_state(uid))
        await self._delivered.set_shared(uid, share, lambda: self._stores.delivery.user_state(uid))
        await self._hub.publish_to_users([uid], notices.settings(share))

    async def forget(self, cid: int, uids: list[int], removed_at: int) -> None:
        """Members removed by the event at seq `removed_at` (after its COMMIT)."""
        await self._state.forget(cid, uids, removed_at)
        await self._delivered.forget(cid, uids, removed_at)

    async def took_part(self, cid: int, uid: int) -> None:
        """`uid` took part in `cid` (after the COMMIT that recorded it): their read pointer
        there may show from now on (§4.9)."""
        await self._state.took_part(uid, cid)
        await self._delivered.took_part(uid, cid)


class Flusher:
    """Writes changed pointers to Postgres every interval; one flusher at a time, cluster-wide."""

    def __init__(
        self, stores: Stores, state: ReadState, interval_s: float, delivered: ReadState | None = None
    ) -> None:
        self._stores = stores
        self._state = state
        self._delivered = delivered or ReadState(state.redis, keys=DELIVERED)
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop, then write everything still dirty (waiting for another flusher)."""
        await tasks.cancel(self._task)
        for _ in range(50):
            try:
                if await self.flush_once() is not None:
                    return
            except Exception:
                log.warning("final flush failed", exc_info=True)
                return
            await asyncio.sleep(0.1)

    async def backlog(self) -> tuple[int, float]:
        return await self._state.backlog()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush_once()
            except Exception:
                metrics.FLUSH_FAILURES.inc()
                log.warning("flush failed; the pointers stay dirty in Redis", exc_info=True)

    async def flush_once(self) -> int | None:
        """Pointers written, or None if another flusher holds the lock."""
        token = await self._state.acquire_flush_lock(ttl_ms=max(30_000, int(self._interval * 3000)))
        if token is None:
            return None
        started, clock = time.time(), time.perf_counter()
        try:
            written = 0
            receipts, delivery = self._stores.receipts, self._stores.delivery
            for state, upsert in ((self._state, receipts.upsert), (self._delivered, delivery.upsert)):
                for _ in range(2):  # a batch a crashed flusher left behind, then the current one
                    rows = await state.take_dirty()
                    if rows is None:
                        break
                    for start in range(0, len(rows), 5000):
                        written += await upsert(rows[start : start + 5000])
                    await state.flushed()
            await self._state.mark_flushed_before(started)
            metrics.FLUSH_DURATION.observe(time.perf_counter() - clock)
            metrics.POINTERS_FLUSHED.inc(written)
            if written:
                log.info("read pointers flushed", extra={"rows": written})
            return written
        finally:
            await self._state.release_flush_lock(token)
