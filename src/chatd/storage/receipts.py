from __future__ import annotations

import asyncpg

UNREAD_CAP = 1000


class ReceiptStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def room_pointers(self, cid: int) -> list[tuple[int, int]]:
        """(user, seq) of current members who share read state: the sorted set's contents."""
        rows = await self._pool.fetch(
            "SELECT rp.user_id, rp.last_read_seq FROM read_pointers rp"
            " JOIN members m ON m.conversation_id = rp.conversation_id AND m.user_id = rp.user_id"
            " JOIN users u ON u.id = rp.user_id"
            " WHERE rp.conversation_id = $1 AND u.share_read_state",
            cid,
        )
        return [(row["user_id"], row["last_read_seq"]) for row in rows]

    async def user_pointers(self, uid: int) -> list[tuple[int, int]]:
        rows = await self._pool.fetch(
            "SELECT conversation_id, last_read_seq FROM read_pointers WHERE user_id = $1", uid
        )
        return [(row["conversation_id"], row["last_read_seq"]) for row in rows]

    async def upsert(self, rows: list[tuple[int, int, int]]) -> int:
        """Idempotent, monotonic: a pointer in Postgres never moves back. Non-members skipped."""
        if not rows:
            return 0
        cids, uids, seqs = (list(column) for column in zip(*rows, strict=True))
        result: str = await self._pool.execute(
            "INSERT INTO read_pointers (conversation_id, user_id, last_read_seq)"
            " SELECT t.c, t.u, t.s FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS t(c, u, s)"
            " WHERE EXISTS (SELECT 1 FROM members m WHERE m.conversation_id = t.c AND m.user_id = t.u)"
            " ON CONFLICT (conversation_id, user_id) DO UPDATE"
            " SET last_read_seq = GREATEST(read_pointers.last_read_seq, EXCLUDED.last_read_seq),"
            "     updated_at = now()",
            cids,
            uids,
            seqs,
        )
        return int(result.split()[-1])

    async def target(self, cid: int, uid: int) -> tuple[str, int, int] | None:
        """(kind, last_seq, member_count) if `uid` is a member of `cid`, else None."""
        row = await self._pool.fetchrow(
            "SELECT c.kind, c.last_seq, c.member_count FROM conversations c"
            " JOIN members m ON m.conversation_id = c.id AND m.user_id = $2 WHERE c.id = $1",
            cid,
            uid,
        )
        return None if row is None else (row["kind"], row["last_seq"], row["member_count"])

    async def text_senders(self, cid: int, lo: int, hi: int) -> list[tuple[int, int | None]]:
        rows = await self._pool.fetch(
            "SELECT seq, sender_id FROM messages WHERE conversation_id = $1"
            " AND seq BETWEEN $2 AND $3 AND kind = 'text' ORDER BY seq",
            cid,
            lo,
            hi,
        )
        return [(row["seq"], row["sender_id"]) for row in rows]

    async def unread(self, uid: int, pointers: dict[int, int]) -> dict[int, int]:
        """Text messages from others after each pointer (and after joining), up to UNREAD_CAP."""
        if not pointers:
            return {}
        rows = await self._pool.fetch(
            "SELECT p.cid, (SELECT count(*) FROM (SELECT 1 FROM messages m"
            "   WHERE m.conversation_id = p.cid AND m.kind = 'text'"
            "   AND m.seq > GREATEST(p.seq, (SELECT joined_seq FROM members"
            "                                WHERE conversation_id = p.cid AND user_id = $3))"
            "   AND m.sender_id IS DISTINCT FROM $3 LIMIT $4) AS x) AS unread"
            " FROM unnest($1::bigint[], $2::bigint[]) AS p(cid, seq)",
            list(pointers),
            list(pointers.values()),
            uid,
            UNREAD_CAP,
        )
        return {row["cid"]: row["unread"] for row in rows}

    async def kind(self, cid: int) -> str:
        kind: str | None = await self._pool.fetchval("SELECT kind FROM conversations WHERE id = $1", cid)
        return kind or "group"

    async def member_count(self, cid: int) -> int:
        count: int | None = await self._pool.fetchval(
            "SELECT member_count FROM conversations WHERE id = $1", cid
        )
        return count or 0

    async def set_share(self, uid: int, share: bool) -> None:
        await self._pool.execute("UPDATE users SET share_read_state = $2 WHERE id = $1", uid, share)
