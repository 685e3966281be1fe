from __future__ import annotations

from typing import NamedTuple

import asyncpg

from chatd.storage.records import READABLE
from chatd.storage.replica import Reader, Replica

UNREAD_CAP = 1000
_READABLE = [str(kind) for kind in READABLE]


class Target(NamedTuple):
    kind: str
    last_seq: int
    member_count: int
    joined_seq: int  # the seq the membership began after
    took_part: bool


class _PointerStore:
    """Per-member "up to seq" pointers in one table (read or delivered): what Redis keeps of a
    user, and the monotonic flush of Redis's pointers into Postgres."""

    _table = "read_pointers"
    _column = "last_read_seq"

    def __init__(self, pool: asyncpg.Pool, replica: Replica | None = None) -> None:
        self._pool = pool
        self._replica = replica or Replica(pool)

    async def user_state(self, uid: int) -> tuple[bool, list[tuple[int, int]], list[int]]:
        """What Redis keeps of a user: the sharing setting, their pointers, and the
        conversations they took part in. One snapshot."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            share = await conn.fetchval("SELECT share_read_state FROM users WHERE id = $1", uid)
            pointers = await conn.fetch(
                f"SELECT conversation_id, {self._column} FROM {self._table} WHERE user_id = $1", uid
            )
            took_part = await conn.fetch(
                "SELECT conversation_id FROM members WHERE user_id = $1 AND took_part", uid
            )
        return (
            bool(share) if share is not None else True,
            [(row[0], row[1]) for row in pointers],
            [row["conversation_id"] for row in took_part],
        )

    async def upsert(self, rows: list[tuple[int, int, int]]) -> int:
        """Idempotent, monotonic: a pointer in Postgres never moves back. Non-members skipped."""
        if not rows:
            return 0
        cids, uids, seqs = (list(column) for column in zip(*rows, strict=True))
        table, column = self._table, self._column
        result: str = await self._pool.execute(
            f"INSERT INTO {table} (conversation_id, user_id, {column})"
            " SELECT t.c, t.u, t.s FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS t(c, u, s)"
            " WHERE EXISTS (SELECT 1 FROM members m WHERE m.conversation_id = t.c AND m.user_id = t.u)"
            " ON CONFLICT (conversation_id, user_id) DO UPDATE"
            f" SET {column} = GREATEST({table}.{column}, EXCLUDED.{column}), updated_at = now()",
            cids,
            uids,
            seqs,
        )
        return int(result.split()[-1])


class ReceiptStore(_PointerStore):
    async def room_pointers(self, cid: int) -> list[tuple[int, int, int]]:
        """(user, seq, joined_seq) of current members others may see read (they share read state
        and took part, §4.9): the sorted set's contents."""
        rows = await self._pool.fetch(
            "SELECT rp.user_id, rp.last_read_seq, m.joined_seq FROM read_pointers rp"
            " JOIN members m ON m.conversation_id = rp.conversation_id AND m.user_id = rp.user_id"
            " JOIN users u ON u.id = rp.user_id"
            " WHERE rp.conversation_id = $1 AND u.share_read_state AND m.took_part",
            cid,
        )
        return [(row["user_id"], row["last_read_seq"], row["joined_seq"]) for row in rows]

    async def target(self, cid: int, uid: int) -> Target | None:
        """The conversation as `uid`'s read mark sees it, if `uid` is a member of `cid`."""
        row = await self._pool.fetchrow(
            "SELECT c.kind, c.last_seq, c.member_count, m.joined_seq, m.took_part FROM conversations c"
            " JOIN members m ON m.conversation_id = c.id AND m.user_id = $2 WHERE c.id = $1",
            cid,
            uid,
        )
        if row is None:
            return None
        return Target(row["kind"], row["last_seq"], row["member_count"], row["joined_seq"], row["took_part"])

    async def text_senders(self, cid: int, lo: int, hi: int) -> list[tuple[int, int | None]]:
        """(seq, sender) of the messages people read (records.READABLE) in lo..hi."""
        rows = await self._pool.fetch(
            "SELECT seq, sender_id FROM messages WHERE conversation_id = $1"
            " AND seq BETWEEN $2 AND $3 AND kind = ANY($4::text[]) ORDER BY seq",
            cid,
            lo,
            hi,
            _READABLE,
        )
        return [(row["seq"], row["sender_id"]) for row in rows]

    async def unread(
        self, uid: int, pointers: dict[int, int], heads: dict[int, int] | None = None
    ) -> dict[int, int]:
        """Messages (records.READABLE) from others after each pointer (and after joining), up to
        UNREAD_CAP. `heads`: each conversation's last seq as the caller knows it committed;
        given, the counts may come from the replica if it has replayed that far
        (storage/replica.py)."""
        if not pointers:
            return {}

        async def read(db: Reader) -> list[asyncpg.Record]:
            rows: list[asyncpg.Record] = await db.fetch(
                "SELECT p.cid, (SELECT count(*) FROM (SELECT 1 FROM messages m"
                "   WHERE m.conversation_id = p.cid AND m.kind = ANY($5::text[])"
                "   AND m.seq > GREATEST(p.seq, (SELECT joined_seq FROM members"
                "                                WHERE conversation_id = p.cid AND user_id = $3))"
                "   AND m.sender_id IS DISTINCT FROM $3 LIMIT $4) AS x) AS unread"
                " FROM unnest($1::bigint[], $2::bigint[]) AS p(cid, seq)",
                list(pointers),
                list(pointers.values()),
                uid,
                UNREAD_CAP,
                _READABLE,
            )
            return rows

        need = None if heads is None else {cid: heads.get(cid, 0) for cid in pointers}
        rows = await self._replica.read(need, read)
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


class DeliveryStore(_PointerStore):
    """Delivery pointers ("received up to seq"): the same shapes as ReceiptStore's read pointers,
    so readstate.ReadState keeps them in Redis the same way (instance DELIVERED)."""

    _table = "delivery_pointers"
    _column = "last_delivered_seq"

    async def room_pointers(self, cid: int) -> list[tuple[int, int, int]]:
        """(user, seq, joined_seq) of current members others may see, as for reads; a read
        pointer counts as delivered too (never fewer delivered than read), so the greater."""
        rows = await self._pool.fetch(
            "SELECT m.user_id, GREATEST(dp.last_delivered_seq, rp.last_read_seq, 0) AS seq, m.joined_seq"
            " FROM members m JOIN users u ON u.id = m.user_id"
            " LEFT JOIN delivery_pointers dp"
            "  ON dp.conversation_id = m.conversation_id AND dp.user_id = m.user_id"
            " LEFT JOIN read_pointers rp ON rp.conversation_id = m.conversation_id AND rp.user_id = m.user_id"
            " WHERE m.conversation_id = $1 AND u.share_read_state AND m.took_part"
            " AND (dp.user_id IS NOT NULL OR rp.user_id IS NOT NULL)",
            cid,
        )
        return [(row["user_id"], row["seq"], row["joined_seq"]) for row in rows]
