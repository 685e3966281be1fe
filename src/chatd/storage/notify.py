"""Notification settings, mutes and Web Push subscriptions (migration 0008)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from chatd.errors import ChatdError, Code


@dataclass(frozen=True, slots=True)
class Target:
    """One subscription a push about a message may go to."""

    id: int
    user_id: int
    endpoint: str
    p256dh: str
    auth: str
    preview: bool


class NotifyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # -- settings ------------------------------------------------------------------------
    async def settings(self, user_id: int) -> dict[str, Any]:
        row = await self._pool.fetchrow(
            "SELECT dnd, push_preview FROM notify_settings WHERE user_id = $1", user_id
        )
        muted = await self._pool.fetch(
            "SELECT conversation_id FROM members WHERE user_id = $1 AND muted ORDER BY conversation_id",
            user_id,
        )
        return {
            "dnd": bool(row and row["dnd"]),
            "push_preview": bool(row and row["push_preview"]),
            "muted": [r["conversation_id"] for r in muted],
        }

    async def many_settings(self, user_ids: list[int]) -> dict[int, dict[str, Any]]:
        """`settings` for many users in two queries (a resync of a whole worker)."""
        found: dict[int, dict[str, Any]] = {
            uid: {"dnd": False, "push_preview": False, "muted": []} for uid in user_ids
        }
        for row in await self._pool.fetch(
            "SELECT user_id, dnd, push_preview FROM notify_settings WHERE user_id = ANY($1::bigint[])",
            user_ids,
        ):
            found[row["user_id"]].update(dnd=row["dnd"], push_preview=row["push_preview"])
        for row in await self._pool.fetch(
            "SELECT user_id, conversation_id FROM members WHERE user_id = ANY($1::bigint[]) AND muted"
            " ORDER BY user_id, conversation_id",
            user_ids,
        ):
            found[row["user_id"]]["muted"].append(row["conversation_id"])
        return found

    async def set_settings(self, user_id: int, dnd: bool | None, preview: bool | None) -> None:
        """Change the given fields (None: keep)."""
        await self._pool.execute(
            "INSERT INTO notify_settings (user_id, dnd, push_preview)"
            " VALUES ($1, coalesce($2, false), coalesce($3, false))"
            " ON CONFLICT (user_id) DO UPDATE SET dnd = coalesce($2, notify_settings.dnd),"
            " push_preview = coalesce($3, notify_settings.push_preview)",
            user_id,
            dnd,
            preview,
        )

    async def set_muted(self, conversation_id: int, user_id: int, muted: bool) -> None:
        found = await self._pool.fetchval(
            "UPDATE members SET muted = $3 WHERE conversation_id = $1 AND user_id = $2 RETURNING 1",
            conversation_id,
            user_id,
            muted,
        )
        if found is None:
            raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation")

    # -- subscriptions -------------------------------------------------------------------
    async def subscribe(
        self, user_id: int, token_hash: bytes, endpoint: str, p256dh: str, auth: str, keep: int
    ) -> int | None:
        """Store (or take over) the subscription of `endpoint` for this device; the user keeps
        at most `keep`, the newest. None if the token was revoked meanwhile."""
        async with self._pool.acquire() as conn, conn.transaction():
            sub_id: int | None = await conn.fetchval(
                "INSERT INTO push_subscriptions (user_id, token_hash, endpoint, p256dh, auth)"
                " SELECT $1, $2, $3, $4, $5 WHERE EXISTS"
                " (SELECT 1 FROM tokens WHERE token_hash = $2 AND user_id = $1)"
                " ON CONFLICT (endpoint) DO UPDATE SET user_id = EXCLUDED.user_id,"
                " token_hash = EXCLUDED.token_hash, p256dh = EXCLUDED.p256dh, auth = EXCLUDED.auth,"
                " created_at = now()"
                " RETURNING id",
                user_id,
                token_hash,
                endpoint,
                p256dh,
                auth,
            )
            if sub_id is not None:
                await conn.execute(
                    "DELETE FROM push_subscriptions WHERE user_id = $1 AND id NOT IN"
                    " (SELECT id FROM push_subscriptions WHERE user_id = $1"
                    " ORDER BY created_at DESC, id DESC LIMIT $2)",
                    user_id,
                    keep,
                )
            return sub_id

    async def unsubscribe(self, user_id: int, endpoint: str) -> bool:
        status = await self._pool.execute(
            "DELETE FROM push_subscriptions WHERE user_id = $1 AND endpoint = $2", user_id, endpoint
        )
        return status != "DELETE 0"

    async def subscriptions(self, user_id: int) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT id, token_hash, endpoint, created_at FROM push_subscriptions WHERE user_id = $1"
            " ORDER BY id",
            user_id,
        )
        return [dict(row) for row in rows]

    async def forget_tokens(self, token_hashes: list[bytes]) -> int:
        status = await self._pool.execute(
            "DELETE FROM push_subscriptions WHERE token_hash = ANY($1::bytea[])", token_hashes
        )
        return int(status.split()[-1])

    async def forget_user(self, user_id: int) -> int:
        status = await self._pool.execute("DELETE FROM push_subscriptions WHERE user_id = $1", user_id)
        return int(status.split()[-1])

    async def gone(self, subscription_id: int, endpoint: str) -> None:
        """The push service said the subscription no longer exists (404, 410)."""
        await self._pool.execute(
            "DELETE FROM push_subscriptions WHERE id = $1 AND endpoint = $2", subscription_id, endpoint
        )

    # -- what a push needs ---------------------------------------------------------------
    async def targets(self, messages: list[tuple[int, int]]) -> dict[tuple[int, int], list[Target]]:
        """For each (conversation, sender) of a message: the subscriptions of the members who
        may be pushed about it, i.e. everyone else, unless they muted the conversation or are
        in do-not-disturb. One statement for the lot."""
        if not messages:
            return {}
        cids, senders = (list(column) for column in zip(*messages, strict=True))
        rows = await self._pool.fetch(
            "SELECT p.cid, p.sender, s.id, s.user_id, s.endpoint, s.p256dh, s.auth,"
            " coalesce(n.push_preview, false) AS preview"
            " FROM unnest($1::bigint[], $2::bigint[]) AS p(cid, sender)"
            " JOIN members m ON m.conversation_id = p.cid AND m.user_id <> p.sender AND NOT m.muted"
            " JOIN push_subscriptions s ON s.user_id = m.user_id"
            " LEFT JOIN notify_settings n ON n.user_id = m.user_id"
            " WHERE NOT coalesce(n.dnd, false) ORDER BY p.cid, p.sender, s.user_id, s.id",
            cids,
            senders,
        )
        found: dict[tuple[int, int], list[Target]] = {}
        for r in rows:
            target = Target(r["id"], r["user_id"], r["endpoint"], r["p256dh"], r["auth"], r["preview"])
            found.setdefault((r["cid"], r["sender"]), []).append(target)
        return found

    async def names(self, conversation_id: int, sender_id: int) -> tuple[str, str, str | None] | None:
        """(sender's username, the conversation's kind, its title)."""
        row = await self._pool.fetchrow(
            "SELECT u.username, c.kind, c.title FROM users u, conversations c WHERE u.id = $1 AND c.id = $2",
            sender_id,
            conversation_id,
        )
        return None if row is None else (row["username"], row["kind"], row["title"])
