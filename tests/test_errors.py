"""Errors that are not about reaching Postgres or Redis are bugs: logged with the traceback and
answered `internal`, never passed off as a retryable `unavailable`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import orjson
import pytest
import redis.asyncio

from chatd.devstack import Stack
from chatd.processes import free_port
from chatd.storage import is_unavailable
from tests.conftest import Worker
from tests.helpers import Api, Ws

# The group commit's function as a hand-made change left it: its body parameter an integer
# array. The statement, which passes text, finds no such function (UndefinedFunctionError):
# a failure of the server's own making, not of reaching it.
_DRIFTED_SCHEMA = """
DROP FUNCTION chatd_append_many(bigint[], bigint[], text[], text[], text[]);
CREATE FUNCTION chatd_append_many(p_cids bigint[], p_senders bigint[], p_cmids text[],
                                  p_bodies integer[], p_kinds text[])
RETURNS SETOF messages LANGUAGE sql AS $$ SELECT * FROM messages WHERE false $$;
"""


@pytest.fixture
async def drifted_database(stack: Stack) -> AsyncIterator[str]:
    """A database of its own, migrated, then changed behind the code's back (as a hand-made
    change on a server would): a real non-connectivity failure for every send."""
    name = f"drift_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = stack.database_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "chatd", "migrate"],
            env={**stack.env(), "CHATD_DATABASE_URL": dsn},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert migrate.returncode == 0, migrate.stderr
        conn = await asyncpg.connect(dsn)
        await conn.execute(_DRIFTED_SCHEMA)
        await conn.close()
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_bug_is_logged_with_its_traceback_and_answered_internal(
    drifted_database: str, private_redis: str, spawn_worker: Callable[..., Worker]
) -> None:
    worker = spawn_worker(CHATD_DATABASE_URL=drifted_database, CHATD_REDIS_URL=private_redis)
    api = Api(worker.url)
    try:
        alice, bob = await api.user(), await api.user()
        cid = await api.direct(alice, bob)
        ws = await Ws.connect(worker.url, alice.token)
        reply = await ws.send(cid, "hello")
        assert reply["type"] == "error" and reply["code"] == "internal", reply
        # The socket stays usable: a later frame is answered.
        await ws.send_json({"type": "ping"})
        await ws.expect(lambda f: f["type"] == "pong")
        await ws.close()
    finally:
        await api.http.aclose()
    lines = [orjson.loads(line) for line in worker.log.read_text().splitlines() if line.startswith("{")]
    assert any(
        line["event"] == "frame failed"
        and "Traceback" in line.get("exc", "")
        and "UndefinedFunctionError" in line["exc"]
        for line in lines
    ), lines
    assert not any(line["event"] == "unavailable reply" for line in lines), lines


async def test_only_failures_to_reach_postgres_or_redis_count_as_unavailable(
    stack: Stack, tmp_path: Path
) -> None:
    """Each exception here is produced for real, by the OS, asyncpg or redis-py."""
    closed_port = free_port()
    caught: dict[str, BaseException] = {}

    async def catch(name: str, action: Awaitable[object]) -> None:
        try:
            await action
        except Exception as exc:
            caught[name] = exc
        else:
            raise AssertionError(f"{name}: no exception")

    await catch("postgres refused", asyncpg.connect(f"postgresql://chatd@127.0.0.1:{closed_port}/chatd"))
    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{closed_port}/0")
    await catch("redis refused", client.ping())
    await client.aclose()
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=1)
    await pool.close()
    await catch("pool closed", pool.fetchval("SELECT 1"))
    conn = await asyncpg.connect(stack.database_url)
    try:
        # A bug: two queries at once on one connection.
        busy = asyncio.ensure_future(conn.execute("SELECT pg_sleep(0.5)"))
        await asyncio.sleep(0)
        await catch("connection misused", conn.fetchval("SELECT 1"))
        await busy
    finally:
        await conn.close()

    async def write_to_a_directory() -> None:
        open(tmp_path, "w").close()  # noqa: ASYNC230

    await catch("os error, not about a peer", write_to_a_directory())
    kinds = {name: (type(exc).__name__, is_unavailable(exc)) for name, exc in caught.items()}
    assert {name: unavailable for name, (_, unavailable) in kinds.items()} == {
        "postgres refused": True,
        "redis refused": True,
        "pool closed": True,
        "connection misused": False,
        "os error, not about a peer": False,
    }, kinds
