"""Secrets as systemd credentials ($CREDENTIALS_DIRECTORY), and a runtime role with DML only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from chatd.config import ConfigError, Settings
from chatd.devstack import Stack
from tests.conftest import Worker
from tests.helpers import Api, Ws

# Every character that breaks SQL text, a URL or a shell line.
AWKWARD = 'it\'s "q" @:/%?#&=+ \\ $x;--'


@pytest.fixture
async def runtime_role(stack: Stack) -> AsyncIterator[tuple[str, str]]:
    """A login role with the privileges the deployment gives the workers' role: DML only."""
    name = f"rt_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(stack.database_url)
    # %L quotes the password server-side: the test must not build SQL text from it either.
    create = await admin.fetchval(
        "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)", name, AWKWARD
    )
    await admin.execute(create)
    for grant in (
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}",
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}",
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {}",
    ):
        await admin.execute(grant.format(name))
    try:
        yield name, AWKWARD
    finally:
        await admin.execute(f'DROP OWNED BY "{name}"')
        await admin.execute(f'DROP ROLE "{name}"')
        await admin.close()


def _without_password(url: str, user: str | None = None) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}@{host}" if user else host).geturl()


def _credentials(directory: Path, **secrets: str) -> Path:
    directory.mkdir()
    for name, secret in secrets.items():
        (directory / name.replace("_", "-")).write_text(secret)
    return directory


async def test_worker_reads_its_passwords_from_the_credentials_directory(
    stack: Stack, runtime_role: tuple[str, str], spawn_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    role, password = runtime_role
    creds = _credentials(tmp_path / "creds", database_password=password, redis_password=stack.redis_password)
    worker = spawn_worker(
        CHATD_DATABASE_URL=_without_password(stack.database_url, role),
        CHATD_REDIS_URL=_without_password(stack.redis_url),
        CREDENTIALS_DIRECTORY=str(creds),
    )
    # Registering, opening a conversation and sending use every table, a sequence and the
    # append function: the runtime role's grants are enough for the whole service.
    api = Api(worker.url)
    try:
        alice, bob = await api.user("cred"), await api.user("cred")
        cid = await api.direct(alice, bob)
        ws = await Ws.connect(worker.url, alice.token)
        ack = await ws.send(cid, "over a credential")
        await ws.close()
        assert ack["type"] == "ack", ack
    finally:
        await api.http.aclose()


async def test_runtime_role_cannot_change_the_schema(stack: Stack, runtime_role: tuple[str, str]) -> None:
    role, password = runtime_role
    conn = await asyncpg.connect(_without_password(stack.database_url, role), password=password)
    try:
        assert await conn.fetchval("SELECT count(*) >= 0 FROM messages")
        for ddl in ("CREATE TABLE evil (x int)", "DROP TABLE messages", "ALTER TABLE users ADD COLUMN x int"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(ddl)
    finally:
        await conn.close()


def test_a_credential_and_a_password_in_the_url_conflict(tmp_path: Path) -> None:
    creds = _credentials(tmp_path / "creds", database_password="x")
    with pytest.raises(
        ConfigError, match=r"^CHATD_DATABASE_URL: has a password and credential database-password"
    ):
        Settings.from_env({"CHATD_DATABASE_URL": "postgresql://u:p@h/d", "CREDENTIALS_DIRECTORY": str(creds)})


def test_credentials_fill_in_urls_of_every_form(tmp_path: Path) -> None:
    creds = _credentials(tmp_path / "creds", database_password=AWKWARD + "\n", redis_password="r:p@")
    settings = Settings.from_env(
        {
            "CHATD_DATABASE_URL": "postgresql://chatd@10.0.0.2:5432/chatd?sslmode=verify-full",
            "CHATD_REDIS_URL": "unix:///run/redis/redis.sock?db=1",
            "CREDENTIALS_DIRECTORY": str(creds),
        }
    )
    db = urlsplit(settings.database_url)
    assert (db.username, db.hostname, db.query) == ("chatd", "10.0.0.2", "sslmode=verify-full")
    assert db.password and db.password != AWKWARD  # percent-encoded, one trailing newline dropped
    assert settings.redis_url == "unix:///run/redis/redis.sock?db=1&password=r%3Ap%40"
    # No directory, or no file for a URL: the URLs stay as they are (local runs, tests).
    plain = {"CHATD_DATABASE_URL": "postgresql://u:p@h/d"}
    assert Settings.from_env(plain).database_url == "postgresql://u:p@h/d"
    assert (
        Settings.from_env({**plain, "CREDENTIALS_DIRECTORY": str(tmp_path)}).database_url
        == plain["CHATD_DATABASE_URL"]
    )
    (creds / "database-password").write_text("")
    with pytest.raises(ConfigError, match=r"^credential database-password: the file is empty$"):
        Settings.from_env({"CHATD_DATABASE_URL": "postgresql://h/d", "CREDENTIALS_DIRECTORY": str(creds)})
