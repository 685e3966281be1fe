from __future__ import annotations

import itertools
from typing import Any

import asyncpg

from chatd.errors import ChatdError, Code

EVENT_COLUMNS = "id, conversation_id, seq, sender_id, client_msg_id, kind, body, user_ids, created_at"

# Group commit: many sends (any conversations) in one statement; seqs in the order of the
# input. It takes the conversation row locks (in id order, so concurrent batches cannot
# deadlock) before it reads the membership (migration 0006 says why that needs a function), so
# nothing of a removed member is stored after the removal. Rows that fail the membership or
# dedupe check are left out; rows are inserted in key order (migration 0007).
_APPEND_MANY = (
    f"SELECT {EVENT_COLUMNS} FROM chatd_append_many($1::bigint[], $2::bigint[], $3::text[], $4::text[])"
)
# The stored rows of some (sender, client_msg_id) keys: what a left-out send is answered from.
_ORIGINALS = (
    f"SELECT {EVENT_COLUMNS} FROM messages WHERE client_msg_id IS NOT NULL"
    " AND (sender_id, client_msg_id) IN (SELECT * FROM unnest($1::bigint[], $2::text[]))"
)

Append = tuple[int, int, str, str]  # conversation_id, sender_id, client_msg_id, body


def event(row: asyncpg.Record) -> dict[str, Any]:
    """A stored row as the `message` frame every recipient gets (docs/protocol.md)."""
    frame: dict[str, Any] = {
        "type": "message",
        "conversation_id": row["conversation_id"],
        "seq": row["seq"],
        "id": row["id"],
        "kind": row["kind"],
        "sender_id": row["sender_id"],
        "client_msg_id": row["client_msg_id"],
        "body": row["body"],
        "created_at": row["created_at"],
    }
    if row["user_ids"] is not None:
        frame["user_ids"] = list(row["user_ids"])
    return frame


class MessageStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def append_many(self, items: list[Append]) -> list[tuple[dict[str, Any], bool] | BaseException]:
        """Store many messages in one statement (one COMMIT); results in the order of `items`.

        The statement is where every send of the batch is ordered, in the order of `items`.
        A send it leaves out (not a member, a resend, the same key twice in `items`) is
        answered from what is stored then, and never stored later, where it would come after
        sends that followed it.
        """
        first: dict[tuple[int, str], int] = {}
        for index, (_, sender, cmid, _) in enumerate(items):
            first.setdefault((sender, cmid), index)
        batch = [items[i] for i in first.values()]
        rows = await self._store([list(column) for column in zip(*batch, strict=True)])
        stored = {(row["sender_id"], row["client_msg_id"]): row for row in rows}
        results: list[tuple[dict[str, Any], bool] | BaseException | None] = [None] * len(items)
        for index, (_, sender, cmid, _) in enumerate(items):
            row = stored.get((sender, cmid))
            if row is not None and first[(sender, cmid)] == index:
                results[index] = (event(row), False)
        left = [i for i, result in enumerate(results) if result is None]
        if left:
            answers = await self.stored([items[i] for i in left])
            for index, answer in zip(left, answers, strict=True):
                # Nothing stored under its key: not a member (or the original was deleted with
                # its conversation).
                results[index] = answer or ChatdError(Code.NOT_MEMBER, "not a member of this conversation")
        return [result for result in results if result is not None]

    async def stored(self, items: list[Append]) -> list[tuple[dict[str, Any], bool] | ChatdError | None]:
        """What is stored under each send's key: its original (duplicate), the refusal if the
        key was used in another conversation, or None if nothing is. Stores nothing."""
        keys = list(dict.fromkeys((sender, cmid) for _, sender, cmid, _ in items))
        found = await self._pool.fetch(_ORIGINALS, [k[0] for k in keys], [k[1] for k in keys])
        originals = {(row["sender_id"], row["client_msg_id"]): row for row in found}
        answers: list[tuple[dict[str, Any], bool] | ChatdError | None] = []
        for cid, sender, cmid, _ in items:
            original = originals.get((sender, cmid))
            if original is None:
                answers.append(None)
            elif original["conversation_id"] != cid:
                message = "client_msg_id was already used for another conversation"
                answers.append(ChatdError(Code.CLIENT_MSG_ID_CONFLICT, message))
            else:
                answers.append((event(original), True))
        return answers

    async def _store(self, columns: list[list[Any]]) -> list[asyncpg.Record]:
        """Run the batch's statement; again, whole and in order, while it fails on a key that
        a concurrent batch committed first (the same fresh client_msg_id sent from two
        workers at once: the statement waits for the other one's COMMIT, then fails). The
        key is then stored and this batch leaves it out as a resend. Never one by one: sends
        retried separately and concurrently would take their seqs in any order."""
        for attempt in itertools.count(1):
            try:
                return await self._pool.fetch(_APPEND_MANY, *columns)
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
    ) -> list[dict[str, Any]]:
        """Events by seq: ascending after `after`, or the `limit` latest before `before`."""
        if after is not None:
            rows = await self._pool.fetch(
                f"SELECT {EVENT_COLUMNS} FROM messages WHERE conversation_id = $1"
                " AND seq > $2 AND ($3::bigint IS NULL OR seq < $3) ORDER BY seq LIMIT $4",
                conversation_id,
                after,
                before,
                limit,
            )
            return [event(row) for row in rows]
        rows = await self._pool.fetch(
            f"SELECT {EVENT_COLUMNS} FROM messages WHERE conversation_id = $1"
            " AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3",
            conversation_id,
            before,
            limit,
        )
        return [event(row) for row in reversed(rows)]

    async def range(self, conversation_id: int, first: int, last: int) -> list[dict[str, Any]]:
        """Events with first <= seq <= last, ascending (gap fill)."""
        rows = await self._pool.fetch(
            f"SELECT {EVENT_COLUMNS} FROM messages WHERE conversation_id = $1"
            " AND seq BETWEEN $2 AND $3 ORDER BY seq",
            conversation_id,
            first,
            last,
        )
        return [event(row) for row in rows]
