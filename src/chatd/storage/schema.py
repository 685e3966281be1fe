"""The migration runner's SQL: which migrations a database has, and applying one."""

from __future__ import annotations

import asyncio

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# Any constant shared by every chatd process; serialises concurrent `chatd migrate` runs.
ADVISORY_LOCK_KEY = 0x63686174_64  # "chatd"
Conn = asyncpg.Connection | PoolConnectionProxy


async def applied_versions(conn: Conn) -> set[int]:
    exists = await conn.fetchval("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}


async def lock(conn: asyncpg.Connection, poll_s: float = 0.2) -> None:
    """Wait for the migration lock (a session-level advisory lock: `unlock` releases it).

    Polled, not waited for in one statement: a statement waiting on the lock holds a snapshot,
    and the holder's `CREATE INDEX CONCURRENTLY` (the search index) waits for every older
    snapshot to go, so the two would deadlock."""
    while True:
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY):
            return
        await asyncio.sleep(poll_s)


async def unlock(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def ensure_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )


async def apply(conn: asyncpg.Connection, version: int, name: str, sql: str) -> None:
    """Run one migration's SQL and record it, in one transaction."""
    async with conn.transaction():
        await conn.execute(sql)
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
