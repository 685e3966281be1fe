"""Edits and deletions of messages (migration 0011, docs/protocol.md §4.11).

One transaction holds the conversation's row lock (serialising with sends and membership
changes, so seqs stay gapless and a removed member changes nothing), reads the facts the rules
need, and the caller then makes the change and appends its sequenced event in it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from chatd.storage import files
from chatd.storage.records import EVENT_COLUMNS, TIMELINE, Event, Kind

Conn = asyncpg.Connection | PoolConnectionProxy


class KeyTaken(Exception):
    """Another transaction committed this (sender, client_msg_id) first: run the change again,
    it is then answered as a resend."""


@dataclass(frozen=True, slots=True)
class Original:
    kind: Kind
    sender_id: int | None
    age_s: float  # since it was sent, by Postgres's clock
    deleted: bool


@dataclass(frozen=True, slots=True)
class AmendFacts:
    """What the rules (policy.py) need, read under the conversation's row lock."""

    conversation_kind: str | None  # None: no such conversation
    actor_role: str | None  # None: not a member
    original: Original | None  # None: no event at that seq


class Amend:
    """One edit or delete inside `AmendStore.change`'s transaction."""

    def __init__(
        self,
        conn: Conn,
        cid: int,
        actor: int,
        cmid: str,
        ref_seq: int,
        facts: AmendFacts,
        stored: Event | None,
    ) -> None:
        self._conn = conn
        self._cid = cid
        self._actor = actor
        self._cmid = cmid
        self._ref_seq = ref_seq
        self.facts = facts
        self.stored = stored  # what is already stored under (actor, client_msg_id), if anything
        self.deleted_files: list[str] = []  # storage keys of the files a delete removed

    async def edit(self, body: str) -> Event:
        """The original's body becomes `body` (the old text is overwritten, not kept)."""
        edited_at = await self._conn.fetchval(
            "UPDATE messages SET body = $3, edited_at = now() WHERE conversation_id = $1 AND seq = $2"
            " RETURNING edited_at",
            self._cid,
            self._ref_seq,
            body,
        )
        event = await self._record(Kind.EDIT)
        return dataclasses.replace(event, body=body, edited_at=edited_at)

    async def delete(self) -> Event:
        deleted_at = await self.erase()
        event = await self._record(Kind.DELETE)
        return dataclasses.replace(event, deleted_at=deleted_at)

    async def erase(self) -> datetime.datetime:
        """Everything the message holds goes here, in the delete's transaction: its text and
        its files (their bytes are rows too, storage/files.py; a file another message also
        carries stays). Returns when it was deleted."""
        row = await self._conn.fetchrow(
            "UPDATE messages SET body = '', attachments = NULL, deleted_at = now()"
            " WHERE conversation_id = $1 AND seq = $2 RETURNING id, deleted_at",
            self._cid,
            self._ref_seq,
        )
        assert row is not None
        # Its files (bytes in Postgres, storage/files.py) go in this transaction too.
        self.deleted_files = await files.delete_for_messages(self._conn, [row["id"]])
        deleted_at: datetime.datetime = row["deleted_at"]
        return deleted_at

    async def _record(self, kind: Kind) -> Event:
        """Append the sequenced event that refers to the original (it holds no text itself)."""
        try:
            async with self._conn.transaction():  # a savepoint: a taken key fails only this
                row = await self._conn.fetchrow(
                    "WITH next AS (UPDATE conversations SET last_seq = last_seq + 1 WHERE id = $1"
                    " RETURNING id, last_seq)"
                    " INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, ref_seq)"
                    f" SELECT id, last_seq, $2, $3, $4, $5 FROM next RETURNING {EVENT_COLUMNS}",
                    self._cid,
                    self._actor,
                    self._cmid,
                    str(kind),
                    self._ref_seq,
                )
        except asyncpg.UniqueViolationError:
            raise KeyTaken from None
        assert row is not None
        return Event.from_row(row)


class AmendStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def change(self, cid: int, actor: int, cmid: str, ref_seq: int) -> AsyncIterator[Amend]:
        """One transaction under the conversation's row lock; raising rolls everything back."""
        async with self._pool.acquire() as conn, conn.transaction():
            kind = await conn.fetchval("SELECT kind FROM conversations WHERE id = $1 FOR UPDATE", cid)
            # Everything else is read by later statements, once the lock is held (migration
            # 0006 says why): a member removed meanwhile is seen as removed.
            role = await conn.fetchval(
                "SELECT role FROM members WHERE conversation_id = $1 AND user_id = $2", cid, actor
            )
            stored = await conn.fetchrow(
                f"{TIMELINE} WHERE m.sender_id = $1 AND m.client_msg_id = $2", actor, cmid
            )
            row = await conn.fetchrow(
                "SELECT kind, sender_id, extract(epoch FROM now() - created_at)::float8 AS age_s,"
                " deleted_at IS NOT NULL AS deleted FROM messages WHERE conversation_id = $1 AND seq = $2",
                cid,
                ref_seq,
            )
            original = None
            if row is not None:
                original = Original(Kind(row["kind"]), row["sender_id"], row["age_s"], row["deleted"])
            facts = AmendFacts(kind, role, original)
            stored_event = Event.from_row(stored) if stored is not None else None
            yield Amend(conn, cid, actor, cmid, ref_seq, facts, stored_event)
