"""CHATD_DATABASE_URL with a host list (a primary and its standby, docs/operations.md "High
availability"): the workers connect to the host that takes writes, host by host, whatever the
others do, against the session's real Postgres and a real hot standby of it."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from chatd import storage
from chatd.config import ConfigError, Settings, database_hosts
from chatd.devstack import Stack
from tests.standby import run_standby


def host_list_url(stack: Stack, *ports: int, attrs: str = "read-write") -> str:
    """The session database's URL with these ports of 127.0.0.1 as its host list."""
    url = urlsplit(stack.database_url)
    user = url.netloc.rpartition("@")[0]
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    query = f"target_session_attrs={attrs}"
    return str(url._replace(netloc=f"{user}@{hosts}", query=query).geturl())


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port where connecting hangs with no answer at all, like a host that lost power: a
    listener that never accepts, its one-entry queue already taken, drops every further SYN."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    filler = socket.create_connection(server.getsockname())
    yield server.getsockname()[1]
    filler.close()
    server.close()


@pytest.fixture
async def closer() -> AsyncIterator[tuple[int, list[int]]]:
    """A port that accepts and at once closes (a host that is up but is no Postgres); the list
    counts the connections it got."""
    seen: list[int] = []

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(1)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], seen
    server.close()
    await server.wait_closed()


@pytest.fixture
def standby(stack: Stack) -> Iterator[int]:
    """A hot standby of the session's Postgres (pg_basebackup, streaming); yields its port."""
    with run_standby(stack) as standby:
        yield standby.port


async def test_a_host_list_url_takes_the_password_credential(
    stack: Stack, db: asyncpg.Connection, tmp_path: Path, closer: tuple[int, list[int]]
) -> None:
    """The systemd credential goes into a URL with a host list as into any other: a role with
    a password that breaks SQL text, URLs and shell lines logs in through the second host."""
    secret = 'it\'s "quoted" @:/%?#&= \\ $x;--'
    role = f"hostlist_{os.getpid()}"
    await db.execute(
        f"CREATE ROLE {role} LOGIN PASSWORD {await db.fetchval('SELECT quote_literal($1)', secret)}"
    )
    try:
        (tmp_path / "database-password").write_text(secret)
        env = {
            "CHATD_DATABASE_URL": f"postgresql://{role}@127.0.0.1:{closer[0]},[::1]:1,"
            f"127.0.0.1:{stack.pg_port}/chatd?target_session_attrs=read-write",
            "CREDENTIALS_DIRECTORY": str(tmp_path),
        }
        url = Settings.from_env(env).database_url
        assert database_hosts(url) == [("127.0.0.1", closer[0]), ("::1", 1), ("127.0.0.1", stack.pg_port)]
        conn = await storage.connect(url)
        try:
            assert await conn.fetchval("SELECT current_user") == role
        finally:
            await conn.close()
    finally:
        await db.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("bad", ["h1:54x2,h2", "h1:5432,", "h1,h2:70000", ",h2"])
def test_a_bad_host_list_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="CHATD_DATABASE_URL: bad host"):
        Settings.from_env({"CHATD_DATABASE_URL": f"postgresql://chatd@{bad}/chatd"})


async def test_a_host_that_never_answers_is_passed_over(stack: Stack, blackhole: int) -> None:
    """The first host lost power (no RST, no ICMP): the pool still reaches the second, after
    CONNECT_TIMEOUT_S, not after the whole connect timeout."""
    pool = await storage.create_pool(host_list_url(stack, blackhole, stack.pg_port), 1, 2)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT inet_server_port()") == stack.pg_port
    finally:
        await pool.close()


async def test_the_standby_is_passed_over_for_the_primary(stack: Stack, standby: int) -> None:
    pool = await storage.create_pool(host_list_url(stack, standby, stack.pg_port), 1, 2)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
            assert await conn.fetchval("SELECT inet_server_port()") == stack.pg_port
    finally:
        await pool.close()
    # Only standbys up (the primary restarting, or lost until a failover): the workers answer
    # `unavailable` (retry), not `internal`.
    with pytest.raises(asyncpg.TargetServerAttributeNotMatched) as caught:
        await storage.connect(host_list_url(stack, standby, standby))
    assert storage.is_unavailable(caught.value)


async def test_the_host_that_answered_last_is_tried_first(
    stack: Stack, closer: tuple[int, list[int]]
) -> None:
    port, seen = closer
    url = host_list_url(stack, port, stack.pg_port)
    first = await storage.connect(url)
    await first.close()
    assert seen == [1]
    again = await storage.connect(url)
    assert await again.fetchval("SELECT inet_server_port()") == stack.pg_port
    await again.close()
    assert seen == [1], "the host that failed before was tried again first"


async def test_connections_notice_a_vanished_host(stack: Stack) -> None:
    """TCP keepalive and a user timeout on every connection the pool makes: a primary that loses
    power is noticed in seconds, not after the kernel's retransmissions (about 15 minutes)."""
    for url in (stack.database_url, host_list_url(stack, stack.pg_port, stack.pg_port)):
        conn = await storage.connect(url)
        try:
            sock = conn._transport.get_extra_info("socket")  # type: ignore[attr-defined]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 5
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 10_000
        finally:
            await conn.close()
