"""The durable source of per-user notices, read to rebuild them after a subscriber outage."""

from __future__ import annotations

from typing import Any

import asyncpg

from chatd.storage.conversations import CONVERSATION_COLUMNS, conversation


class NoticeStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def memberships(self, user_ids: list[int]) -> dict[int, list[tuple[dict[str, Any], int]]]:
        """Per user: each conversation it is a member of, with the seq it joined after."""
        rows = await self._pool.fetch(
            f"SELECT m.user_id, m.joined_seq, {CONVERSATION_COLUMNS} FROM members m"
            " JOIN conversations c ON c.id = m.conversation_id"
            " WHERE m.user_id = ANY($1::bigint[]) ORDER BY m.user_id, c.id",
            user_ids,
        )
        found: dict[int, list[tuple[dict[str, Any], int]]] = {}
        for row in rows:
            found.setdefault(row["user_id"], []).append((conversation(row), row["joined_seq"]))
        return found

    async def share_read_state(self, user_ids: list[int]) -> dict[int, bool]:
        rows = await self._pool.fetch(
            "SELECT id, share_read_state FROM users WHERE id = ANY($1::bigint[])", user_ids
        )
        return {row["id"]: row["share_read_state"] for row in rows}
