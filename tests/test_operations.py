"""Start-up checks, migrations and health endpoints."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import asyncpg
import httpx

from chatd import migrations
from chatd.devstack import Stack
from tests.conftest import Worker


def chatd(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatd", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_missing_or_bad_setting_stops_start_up_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    missing = chatd("serve", env=env)
    assert missing.returncode == 78  # EX_CONFIG: the unit does not restart on it
    assert missing.stderr.strip() == "chatd: CHATD_DATABASE_URL: required but not set"
    bad = chatd("serve", env={**env, "CHATD_DATABASE_URL": "postgresql://x/y", "CHATD_DB_POOL_MAX": "lots"})
    assert bad.returncode == 78
    assert bad.stderr.strip() == "chatd: CHATD_DB_POOL_MAX: expected an integer, got 'lots'"
    url = chatd("check-config", env={**env, "CHATD_DATABASE_URL": "mysql://x/y"})
    assert url.returncode == 78 and "CHATD_DATABASE_URL" in url.stderr and len(url.stderr.splitlines()) == 1


def test_output_to_a_closed_pipe_ends_quietly() -> None:
    # `chatd dev up | head -1`: the reader is gone before the command writes. Its read end is
    # closed here before the start, so the first write fails as it would after `head` exits.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "chatd", "check-config", "--list"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141


async def test_worker_refuses_an_older_schema_and_names_the_migration(stack: Stack) -> None:
    name = f"old_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = stack.database_url.rsplit("/", 1)[0] + f"/{name}"
    env = {**stack.env(), "CHATD_DATABASE_URL": dsn}
    empty = chatd("serve", "--port", "1", env=env)
    assert empty.returncode == 3
    first = migrations.load()[0].name
    assert first in empty.stderr and "chatd migrate" in empty.stderr
    # Two migrations at once: the advisory lock serialises them and both succeed.
    runs = await asyncio.gather(*(asyncio.to_thread(chatd, "migrate", env=env) for _ in range(2)))
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    conn = await asyncpg.connect(dsn)
    assert await migrations.missing(conn) == []
    applied = await conn.fetchval("SELECT count(*) FROM schema_migrations")
    await conn.close()
    assert applied == len(migrations.load())


async def test_health_and_readiness(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{stack.url}/readyz").json() == {"status": "ready"}
    stack.stop_postgres()
    try:
        down = httpx.get(f"{stack.worker_url(0)}/readyz", timeout=30)
        assert down.status_code == 503
        assert any(p.startswith("postgres") for p in down.json()["problems"])
        assert httpx.get(f"{stack.worker_url(0)}/healthz").status_code == 200
        # A request that needs Postgres is told to retry, not that the server has a bug.
        login = httpx.post(
            f"{stack.worker_url(0)}/v1/login", json={"username": "nobody", "password": "x"}, timeout=30
        )
        assert login.status_code == 503 and login.json()["error"]["code"] == "unavailable", login.text
    finally:
        stack.start_postgres()
    deadline = time.monotonic() + 20
    while httpx.get(f"{stack.worker_url(0)}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the worker must become ready again by itself"
        time.sleep(0.1)


def test_worker_without_redis_refuses_to_start(spawn_worker: Callable[..., Worker]) -> None:
    worker = spawn_worker(wait_ready=False, CHATD_REDIS_URL="redis://127.0.0.1:1/0")
    assert worker.proc.wait(30) == 1
    last = worker.log.read_text().strip().splitlines()[-1]
    assert last.startswith("chatd: cannot start: ConnectionError:"), last
