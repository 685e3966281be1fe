"""Helpers for the amplification tests (issue 19): many users or conversations made quickly in
SQL, Redis command counts, and a bystander whose ack latency is measured before and during an
attack. The figures are printed (run with ``-s``) and never asserted: timing belongs to bench/.
"""

from __future__ import annotations

import hashlib
import secrets
import statistics
import time
import uuid

import asyncpg
import redis.asyncio as aioredis

from tests.helpers import Api, User, Ws


async def insert_users(db: asyncpg.Connection, count: int) -> list[User]:
    """`count` users with a live token each, in one statement (registering them over HTTP would
    cost an argon2 hash each). They cannot log in; their tokens work."""
    prefix = f"bulk{uuid.uuid4().hex[:8]}-"
    rows = await db.fetch(
        "INSERT INTO users (username, password_hash) SELECT $1 || g, 'not a hash'"
        " FROM generate_series(1, $2) AS g RETURNING id, username",
        prefix,
        count,
    )
    tokens = [secrets.token_urlsafe(32) for _ in rows]
    await db.executemany(
        "INSERT INTO tokens (token_hash, user_id) VALUES ($1, $2)",
        [(hashlib.sha256(t.encode()).digest(), row["id"]) for t, row in zip(tokens, rows, strict=True)],
    )
    return [User(row["id"], row["username"], t) for row, t in zip(rows, tokens, strict=True)]


async def insert_groups(
    db: asyncpg.Connection,
    owner: int,
    count: int,
    others: list[int] | None = None,
    took_part: bool = True,
    title: str = "g",
) -> list[int]:
    """`count` groups created by `owner` (who took part) with `others` as members."""
    members = sorted(set(others or []) - {owner})
    rows = await db.fetch(
        "INSERT INTO conversations (kind, title, created_by, member_count)"
        " SELECT 'group', left($4 || g, 200), $1, $3 FROM generate_series(1, $2) AS g RETURNING id",
        owner,
        count,
        len(members) + 1,
        title,
    )
    cids = [row["id"] for row in rows]
    await db.execute(
        "INSERT INTO members (conversation_id, user_id, role, took_part)"
        " SELECT c, $2, 'owner', $3 FROM unnest($1::bigint[]) AS c",
        cids,
        owner,
        took_part,
    )
    if members:
        await db.execute(
            "INSERT INTO members (conversation_id, user_id)"
            " SELECT c, u FROM unnest($1::bigint[]) AS c, unnest($2::bigint[]) AS u",
            cids,
            members,
        )
    return cids


async def command_calls(redis: aioredis.Redis, command: str) -> int:
    """How many times Redis has run `command` (INFO commandstats) since it started."""
    stats = await redis.info("commandstats")
    entry = stats.get(f"cmdstat_{command.lower()}")
    return int(entry["calls"]) if entry else 0


class Bystander:
    """Someone chatting on the worker under attack: their sends' ack latency is the figure."""

    def __init__(self, ws: Ws, cid: int) -> None:
        self.ws = ws
        self.cid = cid

    @classmethod
    async def join(cls, api: Api, url: str) -> Bystander:
        me, peer = await api.user("bys"), await api.user("peer")
        cid = await api.direct(me, peer)
        return cls(await Ws.connect(url, me.token), cid)

    async def latencies(self, count: int) -> list[float]:
        """Milliseconds from each send to its ack, one send at a time."""
        found = []
        for _ in range(count):
            started = time.perf_counter()
            ack = await self.ws.send(self.cid, "still here")
            assert ack["type"] == "ack", ack
            found.append((time.perf_counter() - started) * 1000)
        return found

    async def close(self) -> None:
        await self.ws.close()


def figures(item: str, before: list[float], during: list[float]) -> str:
    """One line for the report: p50/p99/max before and during the attack."""

    def summary(values: list[float]) -> str:
        if not values:
            return "no samples"
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        p50, top = statistics.median(ordered), ordered[-1]
        return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {top:.1f} ms (n={len(ordered)})"

    line = f"[{item}] bystander ack latency before: {summary(before)}; during: {summary(during)}"
    print(line)
    return line
