from __future__ import annotations

from datetime import datetime

import asyncpg


class PresenceStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # Presence consent (docs/protocol.md §4.9): B's presence is shared with A only through a
    # conversation both are in and B took part in (created, opened, added members to, or sent
    # a message in).

    async def conversation_ids(self, uid: int) -> list[int]:
        """The conversations `uid`'s presence events go to: those it took part in."""
        rows = await self._pool.fetch(
            "SELECT conversation_id FROM members WHERE user_id = $1 AND took_part", uid
        )
        return [row["conversation_id"] for row in rows]

    async def co_members(self, uid: int, limit: int) -> list[tuple[int, datetime | None]]:
        """Users whose presence `uid` may see (not `uid`), with when they were last seen."""
        rows = await self._pool.fetch(
            "SELECT u.id, u.last_seen FROM users u WHERE u.id IN ("
            " SELECT DISTINCT o.user_id FROM members mine"
            " JOIN members o ON o.conversation_id = mine.conversation_id"
            " WHERE mine.user_id = $1 AND o.user_id <> $1 AND o.took_part) ORDER BY u.id LIMIT $2",
            uid,
            limit,
        )
        return [(row["id"], row["last_seen"]) for row in rows]

    async def visible(self, uid: int, others: list[int]) -> dict[int, datetime | None]:
        """Of `others`, those whose presence `uid` may see (and `uid` itself)."""
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
