"""Run on an app host as the workers run (user chatd, their settings and systemd credentials):
prints one JSON object saying what the workers' database role may do and what the private
links accept. molecule/shared/verify_security.yml starts it with systemd-run and asserts."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis

from chatd.config import Settings

SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"  # public CAs only, not the deployment's own
DDL = {
    "create_table": "CREATE TABLE probe_evil (x int)",
    "drop_table": "DROP TABLE messages",
    "alter_table": "ALTER TABLE users ADD COLUMN probe_evil int",
    "create_schema": "CREATE SCHEMA probe_evil",
    "create_temp_table": "CREATE TEMP TABLE probe_evil (x int)",
    "create_function": "CREATE FUNCTION probe_evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
}


def _outcome(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


async def _pg(dsn: str, **kw: Any) -> str:
    try:
        conn = await asyncpg.connect(dsn, timeout=10, **kw)
    except Exception as exc:  # the outcome is the point
        return _outcome(exc)
    await conn.close()
    return "connected"


async def _redis(url: str) -> str:
    client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        await client.ping()
    except Exception as exc:
        return _outcome(exc)
    finally:
        await client.aclose()
    return "connected"


async def main() -> dict[str, Any]:
    settings = Settings.from_env()
    out: dict[str, Any] = {}
    password = (Path(os.environ["CREDENTIALS_DIRECTORY"]) / "database-password").read_text()
    out["password_has_quote"] = "'" in password
    conn = await asyncpg.connect(settings.database_url, timeout=10)
    try:
        out["user"] = await conn.fetchval("SELECT current_user")
        out["db_tls"] = await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        out["can_read_messages"] = await conn.fetchval("SELECT count(*) >= 0 FROM messages")
        out["ddl"] = {}
        for name, sql in DDL.items():
            try:
                await conn.execute(sql)
                out["ddl"][name] = "allowed"
            except asyncpg.InsufficientPrivilegeError:
                out["ddl"][name] = "denied"
    finally:
        await conn.close()
    out["redis"] = await _redis(settings.redis_url)

    db = urlsplit(settings.database_url)
    plain_db = db._replace(query="").geturl()
    out["db_plain"] = await _pg(plain_db, ssl=False)
    out["db_untrusted_ca"] = await _pg(f"{plain_db}?sslmode=verify-full&sslrootcert={SYSTEM_CAS}")
    rd = urlsplit(settings.redis_url)
    out["redis_plain"] = await _redis(rd._replace(scheme="redis", query="").geturl())
    out["redis_untrusted_ca"] = await _redis(rd._replace(query=f"ssl_ca_certs={SYSTEM_CAS}").geturl())
    return out


if __name__ == "__main__":
    json.dump(asyncio.run(main()), sys.stdout)
