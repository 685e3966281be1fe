"""The backup and restore scripts the backup role installs on the data host, run against the
session's real Postgres and Redis (ansible/roles/backup/files/usr/local/lib/chatd-backup/)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from chatd.devstack import Stack
from tests.conftest import Worker
from tests.helpers import Api, Ws

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "ansible" / "roles" / "backup" / "files" / "usr" / "local" / "lib" / "chatd-backup"
STAMPED = r"chatd-\d{8}T\d{6}Z\.dump"


def redis_db(stack: Stack, db: int) -> str:
    """A URL for redis-cli, which gets the password from REDISCLI_AUTH as the unit gives it."""
    return f"redis://127.0.0.1:{stack.redis_port}/{db}"


def worker_redis(stack: Stack, db: int) -> str:
    return stack.redis_url.rsplit("/", 1)[0] + f"/{db}"


def script_env(stack: Stack, backup_dir: Path, redis: int, **extra: str) -> dict[str, str]:
    """What chatd-backup.service (or restore.yml) gives the scripts, pointed at the test stack."""
    return {
        **os.environ,
        "PGHOST": "127.0.0.1",
        "PGPORT": str(stack.pg_port),
        "PGUSER": "chatd",  # the test cluster's superuser
        "PGPASSWORD": stack.db_password,
        "REDISCLI_AUTH": stack.redis_password,
        "BACKUP_DIR": str(backup_dir),
        "BACKUP_DATABASE": "chatd",
        "BACKUP_REDIS_URL": redis_db(stack, redis),
        "BACKUP_FLUSH_TIMEOUT_S": "30",
        **extra,
    }


def run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / script), *args], env=env, capture_output=True, text=True, timeout=120
    )


def backups(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def restored(stack: Stack, database: str) -> asyncpg.Connection:
    return await asyncpg.connect(stack.database_url.rsplit("/", 1)[0] + f"/{database}")


async def drop_database(stack: Stack, database: str) -> None:
    admin = await asyncpg.connect(stack.database_url.rsplit("/", 1)[0] + "/postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await admin.close()


async def test_backup_holds_read_marks_made_just_before_it(
    stack: Stack, w1: Api, spawn_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    """The backup waits for the workers' next flush: a mark still only in Redis gets in."""
    worker = spawn_worker(CHATD_REDIS_URL=worker_redis(stack, 10), CHATD_RECEIPT_FLUSH_INTERVAL_S="3")
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(worker.url, alice.token)
    for i in range(3):
        await a.send(cid, f"m{i}")
    b = await Ws.connect(worker.url, bob.token)
    await b.read(cid, 2)  # acknowledged: in Redis, dirty, not yet in Postgres
    done = run("chatd-backup", script_env(stack, tmp_path, 10))
    assert done.returncode == 0, done.stderr
    assert "read pointers are in Postgres" in done.stderr, done.stderr
    [dump] = backups(tmp_path)
    scratch = f"restored_{uuid.uuid4().hex[:8]}"
    try:
        back = run(
            "chatd-restore", script_env(stack, tmp_path, 11, BACKUP_DATABASE=scratch), str(tmp_path / dump)
        )
        assert back.returncode == 0, back.stderr
        conn = await restored(stack, scratch)
        pointer = await conn.fetchval(
            "SELECT last_read_seq FROM read_pointers WHERE conversation_id = $1 AND user_id = $2", cid, bob.id
        )
        bodies = await conn.fetch("SELECT body FROM messages WHERE conversation_id = $1 ORDER BY seq", cid)
        await conn.close()
    finally:
        await drop_database(stack, scratch)
    assert pointer == 2
    assert [r["body"] for r in bodies] == ["m0", "m1", "m2"]
    await a.close()
    await b.close()


async def test_backup_with_no_pointer_waiting_does_not_wait(stack: Stack, tmp_path: Path) -> None:
    """Nothing dirty (no worker on this Redis database): the dump is taken at once."""
    done = run("chatd-backup", script_env(stack, tmp_path, 12, BACKUP_FLUSH_TIMEOUT_S="3600"))
    assert done.returncode == 0, done.stderr
    assert "read pointers are in Postgres (waited 0 s)" in done.stderr, done.stderr


def test_backups_are_verified_written_whole_and_pruned(stack: Stack, tmp_path: Path) -> None:
    for name in ("chatd-20200101T000000Z.dump", "chatd-20200101T000001Z.dump", "chatd-20200101T000002Z.dump"):
        (tmp_path / name).write_text("an older backup")
    (tmp_path / "notes.txt").write_text("not a backup")
    (tmp_path / "chatd-manual.dump").write_text("an operator's own copy")
    (tmp_path / ".chatd-20200101T000003Z.dump.tmp").write_text("left by an interrupted run")
    env = script_env(stack, tmp_path, 12, BACKUP_KEEP="2")

    # A dump that is cut short (a full disk, a killed pg_dump) never becomes a backup.
    shim = tmp_path.parent / f"{tmp_path.name}-bin"
    shim.mkdir()
    (shim / "pg_dump").write_text(
        '#!/bin/bash\n/usr/bin/pg_dump "$@" || exit\n'
        'for a in "$@"; do [[ $a == --file=* ]] && truncate -s 2000 "${a#--file=}"; done\nexit 0\n'
    )
    (shim / "pg_dump").chmod(0o755)
    cut = run("chatd-backup", {**env, "PATH": f"{shim}:{env['PATH']}"})
    assert cut.returncode != 0
    assert backups(tmp_path) == [
        "chatd-20200101T000000Z.dump",
        "chatd-20200101T000001Z.dump",
        "chatd-20200101T000002Z.dump",
        "chatd-manual.dump",
        "notes.txt",
    ], "no partial file, nothing pruned"

    done = run("chatd-backup", env)
    assert done.returncode == 0, done.stderr
    left = backups(tmp_path)
    [new] = [n for n in left if not n.startswith("chatd-2020") and n.endswith("Z.dump")]
    assert left == sorted(["chatd-20200101T000002Z.dump", new, "chatd-manual.dump", "notes.txt"])
    assert (tmp_path / new).stat().st_mode & 0o777 == 0o600
    listing = subprocess.run(["pg_restore", "--list", str(tmp_path / new)], capture_output=True, text=True)
    assert listing.returncode == 0 and "TABLE DATA public messages" in listing.stdout


async def test_backup_on_a_cluster_waits_for_every_shards_pointers(
    cluster_stack: Stack, tmp_path: Path
) -> None:
    """On a Redis Cluster the dirty sets are one per conversation shard ({c:N}, keyspace.py):
    the backup waits for a pointer waiting in any of them, not only in one name."""
    stack = cluster_stack
    redis = RedisCluster.from_url(stack.redis_url)
    seed = stack.redis_cluster_ports[0]
    env = script_env(stack, tmp_path, 0, BACKUP_REDIS_CLUSTER="on", BACKUP_FLUSH_TIMEOUT_S="2")
    env["BACKUP_REDIS_URL"] = f"redis://127.0.0.1:{seed}/0"
    lock, dirty = "chatd:{r}rflush-lock", "chatd:{c:7}rdirty"
    try:
        for _ in range(1200):  # taken from the workers: none flushes meanwhile
            if await redis.set(lock, "test", nx=True, px=60_000):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the flush lock was never free")
        await redis.sadd(dirty, "999999:1")  # shard 7: a pointer no flush has written
        held = run("chatd-backup", env)
        assert held.returncode == 0, held.stderr
        assert "not confirmed flushed" in held.stderr, held.stderr
        await redis.delete(dirty)
        await redis.delete(lock)
        (tmp_path / "then").mkdir()  # a dump of the same second is refused by name
        done = run(
            "chatd-backup", {**env, "BACKUP_FLUSH_TIMEOUT_S": "30", "BACKUP_DIR": str(tmp_path / "then")}
        )
        assert done.returncode == 0, done.stderr
        assert "read pointers are in Postgres" in done.stderr, done.stderr
    finally:
        await redis.delete(dirty)
        if await redis.get(lock) == b"test":
            await redis.delete(lock)
        await redis.aclose()


async def test_restore_replaces_the_database_and_only_chatds_redis_keys(stack: Stack, tmp_path: Path) -> None:
    scratch, owner = f"restored_{uuid.uuid4().hex[:8]}", f"schema_owner_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f'CREATE ROLE "{owner}" NOLOGIN')
    await admin.execute(f'CREATE DATABASE "{scratch}"')
    redis = aioredis.Redis.from_url(worker_redis(stack, 11))
    try:
        conn = await restored(stack, scratch)
        await conn.execute("CREATE TABLE leftover (x int)")
        await conn.close()
        await redis.flushdb()
        await redis.hset("chatd:lr:1", mapping={"_": "1", "7": "99"})  # a pointer the dump does not have
        await redis.sadd("chatd:rdirty", "7:1")
        for i in range(1200):  # more than one UNLINK batch
            await redis.set(f"chatd:rl:test:{i}:0", 1)
        await redis.set("someone-else:key", "stays")
        env = script_env(stack, tmp_path, 11, BACKUP_DATABASE=scratch)

        taken = run("chatd-backup", script_env(stack, tmp_path, 12))
        assert taken.returncode == 0, taken.stderr
        [dump] = backups(tmp_path)
        expected = await admin.fetchval("SELECT count(*) FROM messages")

        # Not a whole dump: refused before anything is dropped.
        (tmp_path / "cut.dump").write_bytes((tmp_path / dump).read_bytes()[:2000])
        refused = run("chatd-restore", env, str(tmp_path / "cut.dump"))
        assert refused.returncode != 0
        conn = await restored(stack, scratch)
        assert await conn.fetchval("SELECT count(*) FROM leftover") == 0
        await conn.close()
        assert await redis.dbsize() == 1203

        back = run("chatd-restore", {**env, "BACKUP_RESTORE_OWNER": owner}, str(tmp_path / dump))
        assert back.returncode == 0, back.stderr
        conn = await restored(stack, scratch)
        assert await conn.fetchval("SELECT to_regclass('leftover')") is None
        assert await conn.fetchval("SELECT count(*) FROM messages") == expected
        owners = await conn.fetch("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        assert [r["tableowner"] for r in owners] == [owner]
        dba = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1"
        assert await conn.fetchval(dba, scratch) == owner
        await conn.close()
        assert await redis.keys("*") == [b"someone-else:key"]
        assert "deleted 1202 chatd keys" in back.stderr, back.stderr
    finally:
        await redis.flushdb()
        await redis.aclose()
        await drop_database(stack, scratch)
        await admin.execute(f'DROP ROLE IF EXISTS "{owner}"')
        await admin.close()


def test_metrics_name_the_newest_dump_and_the_last_run(tmp_path: Path) -> None:
    """chatd-backup-metrics (ExecStopPost of chatd-backup.service): what the node exporter's
    textfile collector serves, readable by its user, for ChatdDumpTooOld and ChatdBackupFailed."""
    backup_dir, out = tmp_path / "backups", tmp_path / "textfile"
    backup_dir.mkdir()
    out.mkdir()
    files = {
        "chatd-20260101T000000Z.dump": 1_700_000_000,
        "chatd-20260101T010000Z.dump": 1_700_003_600,  # the newest dump
        ".chatd-20260101T020000Z.dump.tmp": 1_700_007_200,  # one being written
        "other-20260101T030000Z.dump": 1_700_010_800,  # another database's
    }
    for name, mtime in files.items():
        (backup_dir / name).write_bytes(b"PGDMP")
        os.utime(backup_dir / name, (mtime, mtime))
    env = {**os.environ, "METRICS_DIR": str(out), "SERVICE_RESULT": "exit-code"}
    result = subprocess.run([str(SCRIPTS / "chatd-backup-metrics"), str(backup_dir), "chatd"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = (out / "chatd_backup.prom").read_text()
    assert 'chatd_backup_last_success_timestamp_seconds{kind="dump"} 1700003600\n' in text, text
    assert 'chatd_backup_last_run_success{kind="dump"} 0\n' in text, text
    assert os.stat(out / "chatd_backup.prom").st_mode & 0o777 == 0o644
    assert sorted(p.name for p in out.iterdir()) == ["chatd_backup.prom"]  # no temporary file left
