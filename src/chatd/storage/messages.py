from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import asyncpg

from chatd.errors import ChatdError, Code
from chatd.storage import files
from chatd.storage.records import EVENT_COLUMNS, TIMELINE, Append, Event
from chatd.storage.replica import Reader, Replica

# Group commit: many sends (any conversations) in one statement; seqs in the order of the
# input. It takes the conversation row locks (in id order, so concurrent batches cannot
# deadlock) before it reads the membership (migration 0006 says why that needs a function), so
# nothing of a removed member is stored after the removal. Rows that fail the membership or
# dedupe check are left out; rows are inserted in key order (migration 0007); each row's kind
# is the Append's (migration 0010).
_APPEND_MANY = (
    f"SELECT {EVENT_COLUMNS} FROM chatd_append_many("
    "$1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[])"
)
# The stored rows of some (sender, client_msg_id) keys: what a left-out send is answered from.
_ORIGINALS = (
    f"SELECT {EVENT_COLUMNS} FROM messages WHERE client_msg_id IS NOT NULL"
    " AND (sender_id, client_msg_id) IN (SELECT * FROM unnest($1::bigint[], $2::text[]))"
)

Stored = tuple[Event, bool]  # the event, and whether it was stored before (a resend)


class MessageStore:
    def __init__(self, pool: asyncpg.Pool, replica: Replica | None = None) -> None:
        self._pool = pool
        self._replica = replica or Replica(pool)

    async def append_many(self, items: Sequence[Append]) -> list[Stored | BaseException]:
        """Store many messages in one statement (one COMMIT); results in the order of `items`.

        The statement is where every send of the batch is ordered, in the order of `items`.
        A send it leaves out (not a member, a resend, the same key twice in `items`) is
        answered from what is stored then, and never stored later, where it would come after
        sends that followed it.
        """
        first: dict[tuple[int, str], int] = {}
        for index, (_, sender, cmid, *_) in enumerate(items):
            first.setdefault((sender, cmid), index)
        batch = [items[i] for i in first.values()]
        columns: list[list[Any]] = [[i.conversation_id for i in batch], [i.sender_id for i in batch]]
        columns += [[i.client_msg_id for i in batch], [i.body for i in batch], [str(i.kind) for i in batch]]
        links = {key: items[i].files for key, i in first.items() if items[i].files}
        rows, shown = await self._store(columns, links)
        stored = {(row["sender_id"], row["client_msg_id"]): row for row in rows}
        results: list[Stored | BaseException | None] = [None] * len(items)
        for index, (_, sender, cmid, *_) in enumerate(items):
            row = stored.get((sender, cmid))
            if row is not None and first[(sender, cmid)] == index:
                event = Event.from_row(row)
                if row["id"] in shown:
                    event = dataclasses.replace(event, attachments=tuple(shown[row["id"]]))
                results[index] = (event, False)
        left = [i for i, result in enumerate(results) if result is None]
        if left:
            answers = await self.stored([items[i] for i in left])
            for index, answer in zip(left, answers, strict=True):
                # Nothing stored under its key: not a member (or the original was deleted with
                # its conversation).
                results[index] = answer or ChatdError(Code.NOT_MEMBER, "not a member of this conversation")
        return [result for result in results if result is not None]

    async def stored(self, items: Sequence[Append]) -> list[Stored | ChatdError | None]:
        """What is stored under each send's key: its original (duplicate), the refusal if the
        key was used in another conversation, or None if nothing is. Stores nothing."""
        keys = list(dict.fromkeys((item.sender_id, item.client_msg_id) for item in items))
        found = await self._pool.fetch(_ORIGINALS, [k[0] for k in keys], [k[1] for k in keys])
        originals = {(row["sender_id"], row["client_msg_id"]): row for row in found}
        answers: list[Stored | ChatdError | None] = []
        for item in items:
            original = originals.get((item.sender_id, item.client_msg_id))
            if original is None:
                answers.append(None)
            elif original["conversation_id"] != item.conversation_id:
                message = "client_msg_id was already used for another conversation"
                answers.append(ChatdError(Code.CLIENT_MSG_ID_CONFLICT, message))
            elif original["kind"] != item.kind:  # the key of an edit or delete
                message = "client_msg_id was already used for another message or change"
                answers.append(ChatdError(Code.CLIENT_MSG_ID_CONFLICT, message))
            else:
                answers.append((Event.from_row(original), True))
        return answers

    async def _store(
        self, columns: list[list[Any]], links: dict[tuple[int, str], tuple[int, ...]]
    ) -> tuple[list[asyncpg.Record], dict[int, list[dict[str, Any]]]]:
        """Run the batch's statement; again, whole and in order, while it fails on a key that
        a concurrent batch committed first (the same fresh client_msg_id sent from two
        workers at once: the statement waits for the other one's COMMIT, then fails). The
        key is then stored and this batch leaves it out as a resend. Never one by one: sends
        retried separately and concurrently would take their seqs in any order. Sends that
        carry files are linked to them in the same transaction (storage/files.py)."""
        for attempt in itertools.count(1):
            try:
                if not links:
                    return await self._pool.fetch(_APPEND_MANY, *columns), {}
                async with self._pool.acquire() as conn, conn.transaction():
                    rows = await conn.fetch(_APPEND_MANY, *columns)
                    wanted = [
                        (row["id"], row["sender_id"], list(carried))
                        for row in rows
                        if (carried := links.get((row["sender_id"], row["client_msg_id"])))
                    ]
                    return rows, await files.link(conn, wanted)
            except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
                # Each failure means another key of this batch is now stored, so this ends.
                if attempt > len(columns[0]):
                    raise
        raise AssertionError("unreachable")

    async def page(
        self,
        conversation_id: int,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int,
        head: int | None = None,
    ) -> list[Event]:
        """Events by seq: ascending after `after`, or the `limit` latest before `before`.

        `head`: a seq of the conversation known to be committed (its last, as the caller
        knows it); given, the page may be read from the replica if it has replayed up to it
        (or up to `before`, if that is lower), storage/replica.py."""
        need = None
        if head is not None:
            need = {conversation_id: head if before is None else min(head, before - 1)}

        async def read(db: Reader) -> list[Event]:
            if after is not None:
                rows = await db.fetch(
                    f"{TIMELINE} WHERE m.conversation_id = $1"
                    " AND m.seq > $2 AND ($3::bigint IS NULL OR m.seq < $3) ORDER BY m.seq LIMIT $4",
                    conversation_id,
                    after,
                    before,
                    limit,
                )
                return [Event.from_row(row) for row in rows]
            rows = await db.fetch(
                f"{TIMELINE} WHERE m.conversation_id = $1"
                " AND ($2::bigint IS NULL OR m.seq < $2) ORDER BY m.seq DESC LIMIT $3",
                conversation_id,
                before,
                limit,
            )
            return [Event.from_row(row) for row in reversed(rows)]

        return await self._replica.read(need, read)

    async def range(self, conversation_id: int, first: int, last: int) -> list[Event]:
        """Events with first <= seq <= last, ascending (gap fill)."""
        rows = await self._pool.fetch(
            f"{TIMELINE} WHERE m.conversation_id = $1 AND m.seq BETWEEN $2 AND $3 ORDER BY m.seq",
            conversation_id,
            first,
            last,
        )
        return [Event.from_row(row) for row in rows]
