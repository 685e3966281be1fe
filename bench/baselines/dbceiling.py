"""Baseline (a): the database's ceiling, measured two ways on the same PostgreSQL.

- per row: asyncpg, one INSERT (autocommit: one COMMIT) per message, 32 concurrent connections,
  closed loop, into a table shaped like chatd's `messages` without its constraints, in a
  separate database (`bench_ceiling`). What a server that commits each send alone could reach.
- grouped (issue 23): chatd's own group commit, `MessageStore.append_many` (the same statement,
  `chatd_append_many`, and the same Python around it), at batch sizes 1, 8, 32 and 128, into
  chatd's real schema (a separate database, `bench_ceiling_chatd`, with chatd's migrations
  applied; users, 1:1 conversations and their members made by plain INSERTs), closed loop,
  `GROUPED_CONCURRENCY` connections each appending to its own conversations (one per row of
  its batch, so batches do not wait on each other's row locks). Rows/s and PostgreSQL CPU per
  row for each batch size: a ceiling for a server that batches many sends per COMMIT.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any

import asyncpg

from bench.context import Ctx, log
from bench.procstat import CpuMeter, per_thousand
from bench.stats import summary

DDL = """
DROP TABLE IF EXISTS messages;
CREATE TABLE messages (
    id              bigserial UNIQUE,
    conversation_id bigint NOT NULL,
    seq             bigint NOT NULL,
    sender_id       bigint,
    client_msg_id   text,
    kind            text NOT NULL DEFAULT 'text',
    body            text NOT NULL DEFAULT '',
    user_ids        bigint[],
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, seq)
);
CREATE UNIQUE INDEX messages_client_msg_id ON messages (sender_id, client_msg_id);
"""
INSERT = (
    "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body)"
    " VALUES ($1, $2, $3, $4, $5) RETURNING id, created_at"
)
PER_ROW_CONCURRENCY = 32
BATCH_SIZES = (1, 8, 32, 128)
GROUPED_CONCURRENCY = 4  # batches in flight at once (chatd: one per worker at a time, 2 workers)
BODY = "B|0|0.000000|" + "x" * 32

# The population of the grouped phase: user 2k sends to user 2k+1 in conversation k.
POPULATION = """
INSERT INTO users (username, password_hash)
    SELECT 'ceiling' || n, 'not a login' FROM generate_series(1, $1) AS n;
"""
CONVERSATIONS = """
WITH u AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM users),
pairs AS (SELECT a.id AS lo, b.id AS hi FROM u a JOIN u b ON b.n = a.n + 1 WHERE a.n % 2 = 0),
made AS (
    INSERT INTO conversations (kind, created_by, direct_lo, direct_hi)
    SELECT 'direct', lo, lo, hi FROM pairs ORDER BY lo RETURNING id, direct_lo, direct_hi
)
INSERT INTO members (conversation_id, user_id)
    SELECT id, direct_lo FROM made UNION ALL SELECT id, direct_hi FROM made;
"""


async def _database(dsn: str, name: str, fresh: bool) -> str:
    admin = await asyncpg.connect(dsn)
    try:
        if fresh:
            await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return dsn.rsplit("/", 1)[0] + "/" + name


async def _per_row(dsn: str, duration: float) -> dict[str, Any]:
    bench_dsn = await _database(dsn, "bench_ceiling", fresh=False)
    conn = await asyncpg.connect(bench_dsn)
    await conn.execute(DDL)
    await conn.close()
    concurrency = PER_ROW_CONCURRENCY
    pool = await asyncpg.create_pool(bench_dsn, min_size=concurrency, max_size=concurrency)
    latencies: list[float] = []
    deadline = time.monotonic() + duration

    async def worker(task: int) -> None:
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            started = time.monotonic()
            await pool.fetchrow(INSERT, task + 1, seq, task + 1, f"c{task}.{seq}", BODY)
            latencies.append((time.monotonic() - started) * 1000)

    started = time.monotonic()
    await asyncio.gather(*(worker(t) for t in range(concurrency)))
    elapsed = time.monotonic() - started
    await pool.close()
    return {
        "inserts": len(latencies),
        "seconds": round(elapsed, 2),
        "inserts_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": summary(latencies),
    }


async def _grouped_setup(dsn: str) -> tuple[asyncpg.Pool, list[tuple[int, int]]]:
    """chatd's schema in its own database; returns a pool and the (conversation, sender) pairs."""
    from chatd.migrations import migrate

    bench_dsn = await _database(dsn, "bench_ceiling_chatd", fresh=True)
    await migrate(bench_dsn)
    pairs = GROUPED_CONCURRENCY * max(BATCH_SIZES)
    conn = await asyncpg.connect(bench_dsn)
    try:
        await conn.execute(POPULATION.replace("$1", str(2 * pairs)))
        await conn.execute(CONVERSATIONS)
        rows = await conn.fetch("SELECT id, direct_lo FROM conversations ORDER BY id")
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(bench_dsn, min_size=GROUPED_CONCURRENCY, max_size=GROUPED_CONCURRENCY)
    return pool, [(r["id"], r["direct_lo"]) for r in rows]


async def _grouped(pool: asyncpg.Pool, convs: list[tuple[int, int]], batch: int, duration: float) -> Any:
    from chatd.storage.messages import MessageStore
    from chatd.storage.records import Append

    store = MessageStore(pool)
    latencies: list[float] = []
    rows = 0
    failed = 0
    deadline = time.monotonic() + duration

    async def worker(task: int) -> None:
        nonlocal rows, failed
        mine = convs[task * max(BATCH_SIZES) :][:batch]
        n = 0
        while time.monotonic() < deadline:
            n += 1
            items = [Append(cid, sender, f"b{batch}.{n}", BODY) for cid, sender in mine]
            started = time.monotonic()
            results = await store.append_many(items)
            latencies.append((time.monotonic() - started) * 1000)
            stored = sum(1 for r in results if isinstance(r, tuple) and not r[1])
            rows += stored
            failed += len(items) - stored

    started = time.monotonic()
    await asyncio.gather(*(worker(t) for t in range(GROUPED_CONCURRENCY)))
    elapsed = time.monotonic() - started
    return {
        "batch": batch,
        "rows": rows,
        "not_stored": failed,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed, 1),
        "statement_ms": summary(latencies),
    }


async def _phases(pipe: Pipe, dsn: str, duration: float) -> None:
    """Each phase: tell the parent it is ready, wait for its go (it starts the CPU meter), run,
    send the outcome."""

    async def phase(name: str, work: Any) -> None:
        pipe.send({"ready": name})
        pipe.recv()
        pipe.send(await work)

    await phase("per_row", _per_row(dsn, duration))
    pool, convs = await _grouped_setup(dsn)
    try:
        for batch in BATCH_SIZES:
            await phase(f"batch_{batch}", _grouped(pool, convs, batch, duration))
    finally:
        await pool.close()
    pipe.send({"done": True})


def _child(pipe: Pipe, dsn: str, duration: float) -> None:
    try:
        import uvloop

        uvloop.run(_phases(pipe, dsn, duration))
    except Exception as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})


def run(ctx: Ctx) -> dict[str, Any]:
    assert ctx.stack is not None
    duration = 1.5 if ctx.quick else 8.0
    mpctx = mp.get_context("spawn")
    parent, child = mpctx.Pipe()
    proc = mpctx.Process(target=_child, args=(child, ctx.stack.database_url, duration))
    proc.start()
    assert proc.pid is not None
    roots = {"postgres": ctx.stack.postmaster_pid(), "loadgen": proc.pid}
    result: dict[str, Any] = {"concurrency": PER_ROW_CONCURRENCY, "grouped": []}
    try:
        while True:
            msg: dict[str, Any] = parent.recv()
            if "error" in msg:
                result["error"] = msg["error"]
                break
            if msg.get("done"):
                break
            meter = CpuMeter(roots)
            meter.start()
            parent.send("go")
            outcome: dict[str, Any] = parent.recv()
            cpu = meter.stop()
            if "error" in outcome:
                result["error"] = outcome["error"]
                break
            outcome.update(cpu_s=cpu, loadavg_before=meter.load_before, loadavg_after=meter.load_after)
            if msg["ready"] == "per_row":
                outcome["cpu_s_per_1000_inserts"] = per_thousand(cpu, outcome["inserts"])
                result.update(outcome)
                p99 = outcome["latency_ms"]["p99"]
                log(f"db ceiling, per row: {outcome['inserts_per_s']} inserts/s, p99 {p99} ms")
            else:
                rows = outcome["rows"]
                # The postmaster tree's CPU once went down over a phase (-0.93 s): a backend reaped
                # while /proc is read is counted in its own stat and its parent's cutime alike.
                # No figure rather than a wrong one.
                pg = cpu["postgres"] if cpu["postgres"] >= 0 else None
                per_row = round(pg * 1e6 / rows, 1) if rows and pg is not None else None
                outcome["postgres_cpu_us_per_row"] = per_row
                outcome["concurrency"] = GROUPED_CONCURRENCY
                result["grouped"].append(outcome)
                log(
                    f"db ceiling, chatd's append_many x{outcome['batch']}: {outcome['rows_per_s']} rows/s,"
                    f" postgres {outcome['postgres_cpu_us_per_row']} µs/row"
                )
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return result
