from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from chatd.errors import ChatdError, Code

# A token's last use is written at most this often (seconds): not one write per request.
TOUCH_EVERY_S = 60


@dataclass(frozen=True, slots=True)
class TokenOwner:
    """The user a live token belongs to (a deactivated user has no live token)."""

    user_id: int
    username: str
    share_read_state: bool
    is_admin: bool
    display_name: str | None


@dataclass(frozen=True, slots=True)
class Credentials:
    user_id: int
    password_hash: str
    deactivated: bool


class AccountStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_user(
        self, username: str, password_hash: str, *, admin: bool = False, invite_hash: bytes | None = None
    ) -> int | None:
        """The new user's id, or None when the name is taken.

        With `invite_hash`, one use of that invite is taken in the same transaction: its row
        lock orders registrations racing for the last use, and the later one finds none left
        (`invalid_invite`). A taken name gives the use back (the transaction rolls back)."""
        async with self._pool.acquire() as conn, conn.transaction():
            invite_id = None
            if invite_hash is not None:
                invite_id = await conn.fetchval(
                    "UPDATE invites SET uses = uses + 1 WHERE token_hash = $1 AND revoked_at IS NULL"
                    " AND expires_at > now() AND uses < max_uses RETURNING id",
                    invite_hash,
                )
                if invite_id is None:
                    raise ChatdError(Code.INVALID_INVITE, INVALID_INVITE_MESSAGE, field="invite")
            user_id: int | None = await conn.fetchval(
                "INSERT INTO users (username, password_hash, is_admin, invite_id) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (username) DO NOTHING RETURNING id",
                username,
                password_hash,
                admin,
                invite_id,
            )
            if user_id is None and invite_id is not None:
                raise ChatdError(Code.USERNAME_TAKEN, "that username is taken")  # rolls the use back
            return user_id

    async def invite_usable(self, invite_hash: bytes) -> bool:
        """A cheap look before the password is hashed; `create_user` decides for good."""
        found: bool = await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM invites WHERE token_hash = $1 AND revoked_at IS NULL"
            " AND expires_at > now() AND uses < max_uses)",
            invite_hash,
        )
        return found

    async def credentials(self, username: str) -> Credentials | None:
        row = await self._pool.fetchrow(
            "SELECT id, password_hash, deactivated_at IS NOT NULL AS deactivated FROM users"
            " WHERE username = $1",
            username,
        )
        return None if row is None else Credentials(row["id"], row["password_hash"], row["deactivated"])

    async def password_hash(self, user_id: int) -> str | None:
        found: str | None = await self._pool.fetchval(
            "SELECT password_hash FROM users WHERE id = $1", user_id
        )
        return found

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

    async def add_token(
        self, token_hash: bytes, user_id: int, password_hash: str, user_agent: str, address: str
    ) -> bool:
        """Store a token for a login whose password was checked against `password_hash`.

        False, and nothing stored, when the user was deactivated or their password changed
        since it was read. The user's row is share-locked: a deactivation or password change
        (which update that row) either waits for this token and then revokes it, or commits
        first and this finds the row changed."""
        stored: bytes | None = await self._pool.fetchval(
            "INSERT INTO tokens (token_hash, user_id, user_agent, address)"
            " SELECT $1, id, $4, $5 FROM users"
            " WHERE id = $2 AND password_hash = $3 AND deactivated_at IS NULL FOR SHARE"
            " RETURNING token_hash",
            token_hash,
            user_id,
            password_hash,
            user_agent,
            address,
        )
        return stored is not None

    async def live_tokens(self, token_hashes: list[bytes]) -> set[bytes]:
        rows = await self._pool.fetch(
            "SELECT token_hash FROM tokens WHERE token_hash = ANY($1::bytea[])", token_hashes
        )
        return {bytes(row["token_hash"]) for row in rows}

    async def user_for_token(self, token_hash: bytes) -> TokenOwner | None:
        """Who a live token belongs to; notes its use (at most once a minute per token)."""
        row = await self._pool.fetchrow(
            "WITH touched AS (UPDATE tokens SET last_used_at = now() WHERE token_hash = $1"
            f" AND last_used_at < now() - interval '{TOUCH_EVERY_S} seconds')"
            " SELECT u.id, u.username, u.share_read_state, u.is_admin, u.display_name FROM tokens t"
            " JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1 AND u.deactivated_at IS NULL",
            token_hash,
        )
        if row is None:
            return None
        return TokenOwner(
            row["id"], row["username"], row["share_read_state"], row["is_admin"], row["display_name"]
        )

    async def delete_token(self, token_hash: bytes) -> int | None:
        """Revoke a token; returns its user id, or None if it did not exist."""
        user_id: int | None = await self._pool.fetchval(
            "DELETE FROM tokens WHERE token_hash = $1 RETURNING user_id", token_hash
        )
        return user_id

    async def sessions(self, user_id: int) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT id, token_hash, created_at, last_used_at, user_agent, address FROM tokens"
            " WHERE user_id = $1 ORDER BY id",
            user_id,
        )
        return [dict(row.items()) for row in rows]

    async def delete_session(self, user_id: int, session_id: int) -> bytes | None:
        """Revoke one of the user's tokens by its public id; its hash, or None if not theirs."""
        found: bytes | None = await self._pool.fetchval(
            "DELETE FROM tokens WHERE id = $1 AND user_id = $2 RETURNING token_hash", session_id, user_id
        )
        return None if found is None else bytes(found)

    async def change_password(
        self, user_id: int, old_hash: str, new_hash: str, keep: bytes
    ) -> list[bytes] | None:
        """Replace the password if it is still `old_hash`, and revoke every token of the user
        but `keep`, in one transaction; the revoked hashes, or None if the password had changed."""
        async with self._pool.acquire() as conn, conn.transaction():
            changed = await conn.fetchval(
                "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2 RETURNING id",
                user_id,
                old_hash,
                new_hash,
            )
            if changed is None:
                return None
            rows = await conn.fetch(
                "DELETE FROM tokens WHERE user_id = $1 AND token_hash <> $2 RETURNING token_hash",
                user_id,
                keep,
            )
        return [bytes(row["token_hash"]) for row in rows]

    async def set_display_name(self, user_id: int, display_name: str | None) -> None:
        await self._pool.execute("UPDATE users SET display_name = $2 WHERE id = $1", user_id, display_name)


INVALID_INVITE_MESSAGE = "the invite is unknown, expired, used up or revoked"
