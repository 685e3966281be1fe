from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from chatd.errors import ChatdError, Code

EVENT_COLUMNS = "id, conversation_id, seq, sender_id, client_msg_id, kind, body, user_ids, created_at"

# Both take the conversation row lock before they read the membership (migration 0006 says
# why that needs a function): nothing of a removed member is stored after the removal.
# One send: no row if the sender is not a member; a duplicate client_msg_id raises a unique
# violation, which undoes the seq increment too, so no gap is left.
_APPEND = f"SELECT {EVENT_COLUMNS} FROM chatd_append($1, $2, $3, $4)"

# Group commit: many sends (any conversations) in one statement. Rows that fail the
# membership or dedupe check are left out (the caller retries them one by one for the exact
# error); conversation rows are locked in id order, so concurrent batches cannot deadlock.
_APPEND_MANY = (
    f"SELECT {EVENT_COLUMNS} FROM chatd_append_many($1::bigint[], $2::bigint[], $3::text[], $4::text[])"
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

    async def append(
        self, conversation_id: int, sender_id: int, client_msg_id: str, body: str
    ) -> tuple[dict[str, Any], bool]:
        """Store a message; returns (event, duplicate). Committed when this returns."""
        try:
            row = await self._pool.fetchrow(_APPEND, conversation_id, sender_id, client_msg_id, body)
        except asyncpg.UniqueViolationError:
            row = None
        else:
            if row is None:
                raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation")
            return event(row), False
        original = await self._pool.fetchrow(
            f"SELECT {EVENT_COLUMNS} FROM messages WHERE sender_id = $1 AND client_msg_id = $2",
            sender_id,
            client_msg_id,
        )
        if original is None:  # the conflicting row was deleted with its conversation
            raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation")
        if original["conversation_id"] != conversation_id:
            raise ChatdError(
                Code.CLIENT_MSG_ID_CONFLICT,
                "client_msg_id was already used for another conversation",
            )
        return event(original), True

    async def append_many(self, items: list[Append]) -> list[tuple[dict[str, Any], bool] | BaseException]:
        """Store many messages in one statement (one COMMIT); results in the order of `items`.

        A send the statement leaves out (not a member, a resend, the same key twice in `items`)
        or a batch that fails as a whole (a concurrent resend with the same key) is retried
        alone, which gives each one its own answer.
        """
        first: dict[tuple[int, str], int] = {}
        for index, (_, sender, cmid, _) in enumerate(items):
            first.setdefault((sender, cmid), index)
        batch = [items[i] for i in first.values()]
        columns = [list(column) for column in zip(*batch, strict=True)]
        rows: list[asyncpg.Record] = []
        # A concurrent resend with a key of this batch fails the whole statement: nothing is
        # stored, and every send is then retried alone.
        with contextlib.suppress(asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
            rows = await self._pool.fetch(_APPEND_MANY, *columns)
        stored = {(row["sender_id"], row["client_msg_id"]): row for row in rows}
        results: list[tuple[dict[str, Any], bool] | BaseException | None] = [None] * len(items)
        for index, (_, sender, cmid, _) in enumerate(items):
            row = stored.get((sender, cmid))
            if row is not None and first[(sender, cmid)] == index:
                results[index] = (event(row), False)
        alone = [i for i, result in enumerate(results) if result is None]
        outcomes = await asyncio.gather(*(self.append(*items[i]) for i in alone), return_exceptions=True)
        for index, outcome in zip(alone, outcomes, strict=True):
            results[index] = outcome
        return [result for result in results if result is not None]

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
