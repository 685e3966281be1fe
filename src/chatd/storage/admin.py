"""What admins change: invites and users (who is an admin, who is deactivated, passwords)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

USER_COLUMNS = (
    "id AS user_id, username, display_name, is_admin AS admin, deactivated_at IS NOT NULL AS deactivated,"
    " deactivated_at, created_at"
)
INVITE_COLUMNS = (
    "i.id, i.created_by, c.username AS created_by_username, i.created_at, i.expires_at, i.max_uses, i.uses,"
    " i.revoked_at, i.note, CASE WHEN i.revoked_at IS NOT NULL THEN 'revoked'"
    " WHEN i.uses >= i.max_uses THEN 'used_up' WHEN i.expires_at <= now() THEN 'expired'"
    " ELSE 'active' END AS state"
)
INVITES_LISTED = 200


@dataclass(frozen=True, slots=True)
class UserFacts:
    """Read once every active admin's row is locked: who acts, on whom, and how many admins."""

    actor_is_admin: bool
    target: dict[str, Any] | None
    active_admins: int


class UserChange:
    def __init__(self, conn: PoolConnectionProxy, target: int, facts: UserFacts) -> None:
        self._conn = conn
        self._target = target
        self.facts = facts

    async def _user(self, sql: str, *args: Any) -> dict[str, Any]:
        row = await self._conn.fetchrow(f"{sql} RETURNING {USER_COLUMNS}", self._target, *args)
        assert row is not None  # the row is locked for this transaction: it cannot be gone
        return dict(row.items())

    async def _revoke_all(self) -> list[bytes]:
        rows = await self._conn.fetch(
            "DELETE FROM tokens WHERE user_id = $1 RETURNING token_hash", self._target
        )
        return [bytes(row["token_hash"]) for row in rows]

    async def deactivate(self) -> tuple[dict[str, Any], list[bytes]]:
        user = await self._user(
            "UPDATE users SET deactivated_at = coalesce(deactivated_at, now()) WHERE id = $1"
        )
        return user, await self._revoke_all()

    async def reactivate(self) -> dict[str, Any]:
        return await self._user("UPDATE users SET deactivated_at = NULL WHERE id = $1")

    async def set_admin(self, admin: bool) -> dict[str, Any]:
        return await self._user("UPDATE users SET is_admin = $2 WHERE id = $1", admin)

    async def set_password(self, password_hash: str) -> tuple[dict[str, Any], list[bytes]]:
        user = await self._user("UPDATE users SET password_hash = $2 WHERE id = $1", password_hash)
        return user, await self._revoke_all()


class AdminStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # -- invites -------------------------------------------------------------------------
    async def create_invite(
        self, token_hash: bytes, created_by: int | None, expires_in_s: int, max_uses: int, note: str
    ) -> dict[str, Any]:
        row = await self._pool.fetchrow(
            "WITH i AS (INSERT INTO invites (token_hash, created_by, expires_at, max_uses, note)"
            " VALUES ($1, $2, now() + make_interval(secs => $3), $4, $5) RETURNING *)"
            f" SELECT {INVITE_COLUMNS} FROM i LEFT JOIN users c ON c.id = i.created_by",
            token_hash,
            created_by,
            float(expires_in_s),
            max_uses,
            note,
        )
        assert row is not None
        return dict(row.items())

    async def invites(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            f"SELECT {INVITE_COLUMNS} FROM invites i LEFT JOIN users c ON c.id = i.created_by"
            f" ORDER BY i.id DESC LIMIT {INVITES_LISTED}"
        )
        return [dict(row.items()) for row in rows]

    async def revoke_invite(self, invite_id: int) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(
            "WITH i AS (UPDATE invites SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1"
            " RETURNING *)"
            f" SELECT {INVITE_COLUMNS} FROM i LEFT JOIN users c ON c.id = i.created_by",
            invite_id,
        )
        return None if row is None else dict(row.items())

    # -- users ---------------------------------------------------------------------------
    async def users(self, after: int, limit: int) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            f"SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2", after, limit
        )
        return [dict(row.items()) for row in rows]

    async def user(self, user_id: int) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", user_id)
        return None if row is None else dict(row.items())

    @contextlib.asynccontextmanager
    async def change_user(self, actor: int, target: int) -> AsyncIterator[UserChange]:
        """One transaction holding the row lock of every active admin: changes of who is an
        active admin are serialised, so two admins demoting or deactivating each other at once
        cannot leave none. The caller reads `facts`, decides, and changes; raising rolls back."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT id FROM users WHERE is_admin AND deactivated_at IS NULL ORDER BY id FOR UPDATE"
            )
            # A second statement, once the locks are held: it sees what was committed while
            # this one waited (a statement keeps the snapshot it started with).
            row = await conn.fetchrow(
                "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND is_admin AND deactivated_at IS NULL)"
                " AS actor, (SELECT count(*) FROM users WHERE is_admin AND deactivated_at IS NULL) AS admins",
                actor,
            )
            assert row is not None
            found = await conn.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1 FOR UPDATE", target)
            facts = UserFacts(row["actor"], None if found is None else dict(found.items()), row["admins"])
            yield UserChange(conn, target, facts)
