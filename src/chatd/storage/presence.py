from __future__ import annotations

from datetime import datetime

import asyncpg


class PresenceStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # Presence consent (docs/protocol.md §4.9): B's presence is shared with A only through a
    # conversation both are in and B took part in (created, opened, added members to, or sent
    # a message in). Pushed (live events, the `ready` snapshot) only through conversations of
    # at most `max_members` members: no query here reads a member of a bigger conversation.

    async def took_part_members(
        self, cid: int, uid: int, max_members: int
    ) -> list[tuple[int, datetime | None]]:
        """Members of `cid` other than `uid` who took part in it, if it has at most
        `max_members` members: whose presence a member who just joined follows."""
        rows = await self._pool.fetch(
            "SELECT u.id, u.last_seen FROM members m JOIN users u ON u.id = m.user_id"
            " JOIN conversations c ON c.id = m.conversation_id AND c.member_count <= $3"
            " WHERE m.conversation_id = $1 AND m.user_id <> $2 AND m.took_part ORDER BY u.id",
            cid,
            uid,
            max_members,
        )
        return [(row["id"], row["last_seen"]) for row in rows]

    async def small_member(self, cid: int, uid: int, max_members: int) -> tuple[bool, datetime | None]:
        """Whether `uid` is a member of `cid` and it has at most `max_members` members, and
        when `uid` was last seen."""
        row = await self._pool.fetchrow(
            "SELECT u.last_seen FROM members m JOIN users u ON u.id = m.user_id"
            " JOIN conversations c ON c.id = m.conversation_id AND c.member_count <= $3"
            " WHERE m.conversation_id = $1 AND m.user_id = $2",
            cid,
            uid,
            max_members,
        )
        return (row is not None, row["last_seen"] if row is not None else None)

    async def co_members(self, uid: int, limit: int, max_members: int) -> list[tuple[int, datetime | None]]:
        """Users whose presence `uid` is pushed (not `uid`), with when they were last seen."""
        rows = await self._pool.fetch(
            "SELECT u.id, u.last_seen FROM users u WHERE u.id IN ("
            " SELECT DISTINCT o.user_id FROM members mine"
            " JOIN conversations c ON c.id = mine.conversation_id AND c.member_count <= $3"
            " JOIN members o ON o.conversation_id = mine.conversation_id"
            " WHERE mine.user_id = $1 AND o.user_id <> $1 AND o.took_part) ORDER BY u.id LIMIT $2",
            uid,
            limit,
            max_members,
        )
        return [(row["id"], row["last_seen"]) for row in rows]

    async def visible(self, uid: int, others: list[int]) -> dict[int, datetime | None]:
        """Of `others`, those whose presence `uid` may see (and `uid` itself), through a
        conversation of any size: what is not pushed can still be asked for."""
        rows = await self._pool.fetch(
            "SELECT u.id, u.last_seen FROM users u WHERE u.id = ANY($2::bigint[]) AND (u.id = $1 OR EXISTS ("
            " SELECT 1 FROM members mine JOIN members o ON o.conversation_id = mine.conversation_id"
            " WHERE mine.user_id = $1 AND o.user_id = u.id AND o.took_part))",
            uid,
            others,
        )
        return {row["id"]: row["last_seen"] for row in rows}

    async def seen(self, uid: int, when: datetime) -> None:
        await self._pool.execute(
            "UPDATE users SET last_seen = GREATEST(last_seen, $2) WHERE id = $1", uid, when
        )
