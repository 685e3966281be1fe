from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from chatd.errors import ChatdError, Code
from chatd.storage.records import EVENT_COLUMNS, Event, Kind

CONVERSATION_COLUMNS = "c.id, c.kind, c.title, c.created_at, c.last_seq, c.member_count"


def conversation(row: asyncpg.Record) -> dict[str, Any]:
    return {key: row[key] for key in ("id", "kind", "title", "created_at", "last_seq", "member_count")}


Conn = asyncpg.Connection | PoolConnectionProxy


async def _took_part(conn: Conn | asyncpg.Pool, conversation_id: int, user_id: int) -> bool:
    """Consent (docs/protocol.md §4.9): `user_id` took part in the conversation. True if that
    is new."""
    status: str = await conn.execute(
        "UPDATE members SET took_part = true WHERE conversation_id = $1 AND user_id = $2 AND NOT took_part",
        conversation_id,
        user_id,
    )
    return status == "UPDATE 1"


@dataclass(frozen=True, slots=True)
class GroupFacts:
    """What the rules need, read under the conversation's row lock; None: no such row."""

    kind: str | None
    actor_role: str | None


class GroupChange:
    """Membership changes inside `ConversationStore.change_group`'s transaction."""

    def __init__(self, conn: Conn, conversation_id: int, actor: int, facts: GroupFacts) -> None:
        self._conn = conn
        self._cid = conversation_id
        self._actor = actor
        self.facts = facts

    async def add(self, user_ids: list[int]) -> tuple[list[int], int]:
        """Insert the users not yet members; returns them and the new member count."""
        await _took_part(self._conn, self._cid, self._actor)
        rows = await self._conn.fetch(
            "INSERT INTO members (conversation_id, user_id, joined_seq)"
            " SELECT $1, u, (SELECT last_seq FROM conversations WHERE id = $1)"
            " FROM unnest($2::bigint[]) AS u"
            " ON CONFLICT DO NOTHING RETURNING user_id",
            self._cid,
            user_ids,
        )
        added = [row["user_id"] for row in rows]
        if not added:
            return [], 0
        total: int = await self._conn.fetchval(
            "UPDATE conversations SET member_count = member_count + $2 WHERE id = $1 RETURNING member_count",
            self._cid,
            len(added),
        )
        return added, total

    async def remove(self, user_ids: list[int]) -> list[int]:
        """Delete those who are members (and their read pointers); returns them. When the last
        owner leaves, the longest-standing remaining member becomes owner."""
        rows = await self._conn.fetch(
            "DELETE FROM members WHERE conversation_id = $1 AND user_id = ANY($2::bigint[])"
            " RETURNING user_id",
            self._cid,
            user_ids,
        )
        removed = [row["user_id"] for row in rows]
        if not removed:
            return []
        await self._conn.execute(
            "UPDATE conversations SET member_count = member_count - $2 WHERE id = $1",
            self._cid,
            len(removed),
        )
        await self._conn.execute(
            "DELETE FROM read_pointers WHERE conversation_id = $1 AND user_id = ANY($2::bigint[])",
            self._cid,
            removed,
        )
        await self._conn.execute(
            "UPDATE members SET role = 'owner' WHERE conversation_id = $1"
            " AND NOT EXISTS (SELECT 1 FROM members WHERE conversation_id = $1 AND role = 'owner')"
            " AND user_id = (SELECT user_id FROM members WHERE conversation_id = $1"
            "                ORDER BY joined_at, user_id LIMIT 1)",
            self._cid,
        )
        return removed

    async def record(self, kind: Kind, users: list[int]) -> Event:
        """Append the sequenced `members_added`/`members_removed` event."""
        row = await self._conn.fetchrow(
            "WITH next AS (UPDATE conversations SET last_seq = last_seq + 1 WHERE id = $1"
            " RETURNING id, last_seq)"
            " INSERT INTO messages (conversation_id, seq, sender_id, kind, user_ids)"
            f" SELECT id, last_seq, $2, $3, $4 FROM next RETURNING {EVENT_COLUMNS}",
            self._cid,
            self._actor,
            str(kind),
            sorted(users),
        )
        assert row is not None
        return Event.from_row(row)

    async def conversation(self) -> dict[str, Any]:
        row = await self._conn.fetchrow(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = $1", self._cid
        )
        assert row is not None
        return conversation(row)


class ConversationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def took_part(self, conversation_id: int, user_id: int) -> bool:
        """Whether `user_id` is a member of the conversation and took part in it (§4.9)."""
        found: bool | None = await self._pool.fetchval(
            "SELECT took_part FROM members WHERE conversation_id = $1 AND user_id = $2",
            conversation_id,
            user_id,
        )
        return bool(found)

    async def mark_took_part(self, conversation_id: int, user_id: int) -> bool:
        """True if `user_id` had not taken part in the conversation before."""
        return await _took_part(self._pool, conversation_id, user_id)

    async def find_or_create_direct(self, a: int, b: int) -> tuple[dict[str, Any], bool]:
        lo, hi = min(a, b), max(a, b)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO conversations (kind, created_by, direct_lo, direct_hi, member_count)"
                " VALUES ('direct', $1, $2, $3, 2)"
                " ON CONFLICT (direct_lo, direct_hi) WHERE kind = 'direct' DO NOTHING"
                f" RETURNING {CONVERSATION_COLUMNS.replace('c.', '')}",
                a,
                lo,
                hi,
            )
            if row is not None:
                # The opener took part (presence consent, §4.9); the other user not yet.
                await conn.execute(
                    "INSERT INTO members (conversation_id, user_id, took_part)"
                    " VALUES ($1, $2, $4), ($1, $3, $5)",
                    row["id"],
                    lo,
                    hi,
                    lo == a,
                    hi == a,
                )
                return conversation(row), True
            row = await conn.fetchrow(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations c"
                " WHERE kind = 'direct' AND direct_lo = $1 AND direct_hi = $2",
                lo,
                hi,
            )
            assert row is not None
            await _took_part(conn, row["id"], a)  # opening it again is taking part too
            return conversation(row), False

    async def create_group(self, creator: int, title: str, others: list[int]) -> dict[str, Any]:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO conversations (kind, title, created_by) VALUES ('group', $1, $2)"
                f" RETURNING {CONVERSATION_COLUMNS.replace('c.', '')}",
                title,
                creator,
            )
            assert row is not None
            await conn.execute(
                "INSERT INTO members (conversation_id, user_id, role, took_part)"
                " VALUES ($1, $2, 'owner', true)",
                row["id"],
                creator,
            )
            await conn.execute(
                "INSERT INTO members (conversation_id, user_id)"
                " SELECT $1, u FROM unnest($2::bigint[]) AS u WHERE u <> $3"
                " ON CONFLICT DO NOTHING",
                row["id"],
                others,
                creator,
            )
            count = await conn.fetchval(
                "UPDATE conversations SET member_count ="
                " (SELECT count(*) FROM members WHERE conversation_id = $1) WHERE id = $1"
                " RETURNING member_count",
                row["id"],
            )
            return {**conversation(row), "member_count": count}

    async def get_for_member(self, conversation_id: int, user_id: int) -> dict[str, Any]:
        row = await self._pool.fetchrow(
            f"SELECT {CONVERSATION_COLUMNS}, m.role"
            " FROM conversations c JOIN members m ON m.conversation_id = c.id AND m.user_id = $2"
            " WHERE c.id = $1",
            conversation_id,
            user_id,
        )
        if row is None:
            raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation")
        result = conversation(row)
        result["role"] = row["role"]
        return result

    async def require_member(self, conversation_id: int, user_id: int) -> None:
        found = await self._pool.fetchval(
            "SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2",
            conversation_id,
            user_id,
        )
        if found is None:
            raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation")

    async def member_head(self, conversation_id: int, user_id: int) -> int:
        """The conversation's last seq, if `user_id` is a member (else `not_member`)."""
        head: int | None = await self._pool.fetchval(
            "SELECT c.last_seq FROM members m JOIN conversations c ON c.id = m.conversation_id"
            " WHERE m.conversation_id = $1 AND m.user_id = $2",
            conversation_id,
            user_id,
        )
        if head is None:
            raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation")
        return head

    async def of_user(self, user_id: int) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            f"SELECT {CONVERSATION_COLUMNS} FROM members m"
            " JOIN conversations c ON c.id = m.conversation_id"
            " WHERE m.user_id = $1 ORDER BY c.id",
            user_id,
        )
        return [conversation(row) for row in rows]

    async def not_taken_part(self, user_id: int, limit: int) -> list[int]:
        """Groups `user_id` is in but never took part in (someone else put them there)."""
        rows = await self._pool.fetch(
            "SELECT m.conversation_id FROM members m JOIN conversations c ON c.id = m.conversation_id"
            " WHERE m.user_id = $1 AND NOT m.took_part AND c.kind = 'group'"
            " ORDER BY m.conversation_id LIMIT $2",
            user_id,
            limit,
        )
        return [row["conversation_id"] for row in rows]

    async def heads(self, conversation_ids: list[int]) -> dict[int, tuple[int, int]]:
        """(last_seq, member_count) per conversation, as of one moment each."""
        rows = await self._pool.fetch(
            "SELECT id, last_seq, member_count FROM conversations WHERE id = ANY($1::bigint[])",
            conversation_ids,
        )
        return {row["id"]: (row["last_seq"], row["member_count"]) for row in rows}

    async def last_seqs(self, conversation_ids: list[int]) -> dict[int, int]:
        rows = await self._pool.fetch(
            "SELECT id, last_seq FROM conversations WHERE id = ANY($1::bigint[])",
            conversation_ids,
        )
        return {row["id"]: row["last_seq"] for row in rows}

    async def members(self, conversation_id: int, after_user: int, limit: int) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT m.user_id, u.username, m.role, m.joined_at, u.display_name,"
            " u.deactivated_at IS NOT NULL AS deactivated FROM members m"
            " JOIN users u ON u.id = m.user_id"
            " WHERE m.conversation_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3",
            conversation_id,
            after_user,
            limit,
        )
        return [dict(row.items()) for row in rows]

    @contextlib.asynccontextmanager
    async def change_group(self, conversation_id: int, actor: int) -> AsyncIterator[GroupChange]:
        """One transaction holding the conversation's row lock (serialising with sends): the
        caller reads `facts`, decides, and makes its changes; raising rolls everything back."""
        async with self._pool.acquire() as conn, conn.transaction():
            kind = await conn.fetchval(
                "SELECT kind FROM conversations WHERE id = $1 FOR UPDATE", conversation_id
            )
            # Read by a second statement, once the lock is held: a statement that waited for
            # the lock keeps its old snapshot of `members`, so an actor removed meanwhile would
            # still be seen (and could even add themselves back). See migration 0006.
            role = await conn.fetchval(
                "SELECT role FROM members WHERE conversation_id = $1 AND user_id = $2",
                conversation_id,
                actor,
            )
            yield GroupChange(conn, conversation_id, actor, GroupFacts(kind, role))
