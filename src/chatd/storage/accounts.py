from __future__ import annotations

import asyncpg


class AccountStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_user(self, username: str, password_hash: str) -> int | None:
        """The new user's id, or None when the name is taken."""
        user_id: int | None = await self._pool.fetchval(
            "INSERT INTO users (username, password_hash) VALUES ($1, $2)"
            " ON CONFLICT (username) DO NOTHING RETURNING id",
            username,
            password_hash,
        )
        return user_id

    async def credentials(self, username: str) -> tuple[int, str] | None:
        row = await self._pool.fetchrow("SELECT id, password_hash FROM users WHERE username = $1", username)
        return None if row is None else (row["id"], row["password_hash"])

    async def ids_by_username(self, usernames: list[str]) -> dict[str, int]:
        rows = await self._pool.fetch(
            "SELECT username, id FROM users WHERE username = ANY($1::text[])", usernames
        )
        return {row["username"]: row["id"] for row in rows}

    async def known_ids(self, caller: int, user_ids: list[int]) -> set[int]:
        """Of `user_ids`, those `caller` may know exist: itself and anyone it shares a
        conversation with. Other ids, existing or not, are left out alike."""
        rows = await self._pool.fetch(
            "SELECT u FROM unnest($2::bigint[]) AS u WHERE u = $1 OR EXISTS ("
            " SELECT 1 FROM members mine JOIN members o ON o.conversation_id = mine.conversation_id"
            " WHERE mine.user_id = $1 AND o.user_id = u)",
            caller,
            user_ids,
        )
        return {row["u"] for row in rows}

    async def add_token(self, token_hash: bytes, user_id: int) -> None:
        await self._pool.execute(
            "INSERT INTO tokens (token_hash, user_id) VALUES ($1, $2)", token_hash, user_id
        )

    async def live_tokens(self, token_hashes: list[bytes]) -> set[bytes]:
        rows = await self._pool.fetch(
            "SELECT token_hash FROM tokens WHERE token_hash = ANY($1::bytea[])", token_hashes
        )
        return {bytes(row["token_hash"]) for row in rows}

    async def user_for_token(self, token_hash: bytes) -> tuple[int, str, bool] | None:
        """(user id, username, shares read state) for a live token."""
        row = await self._pool.fetchrow(
            "SELECT u.id, u.username, u.share_read_state FROM tokens t"
            " JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
            token_hash,
        )
        return None if row is None else (row["id"], row["username"], row["share_read_state"])

    async def delete_token(self, token_hash: bytes) -> int | None:
        """Revoke a token; returns its user id, or None if it did not exist."""
        user_id: int | None = await self._pool.fetchval(
            "DELETE FROM tokens WHERE token_hash = $1 RETURNING user_id", token_hash
        )
        return user_id
