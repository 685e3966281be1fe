"""Baseline (a): the database ceiling. asyncpg, one INSERT (autocommit: one COMMIT) per message,
32 concurrent connections, closed loop, into a table shaped like chatd's `messages`, in a
separate database of the same PostgreSQL cluster."""

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


async def _load(dsn: str, concurrency: int, duration: float) -> dict[str, Any]:
    admin = await asyncpg.connect(dsn)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = 'bench_ceiling'"):
            await admin.execute("CREATE DATABASE bench_ceiling")
    finally:
        await admin.close()
    bench_dsn = dsn.rsplit("/", 1)[0] + "/bench_ceiling"
    conn = await asyncpg.connect(bench_dsn)
    await conn.execute(DDL)
    await conn.close()
    pool = await asyncpg.create_pool(bench_dsn, min_size=concurrency, max_size=concurrency)
    latencies: list[float] = []
    deadline = time.monotonic() + duration
    body = "B|0|0.000000|" + "x" * 32

    async def worker(task: int) -> None:
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            started = time.monotonic()
            await pool.fetchrow(INSERT, task + 1, seq, task + 1, f"c{task}.{seq}", body)
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


def _child(pipe: Pipe, dsn: str, concurrency: int, duration: float) -> None:
    try:
        import uvloop

        pipe.send(uvloop.run(_load(dsn, concurrency, duration)))
    except Exception as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})


def run(ctx: Ctx) -> dict[str, Any]:
    assert ctx.stack is not None
    concurrency, duration = 32, (3.0 if ctx.quick else 10.0)
    mpctx = mp.get_context("spawn")
    parent, child = mpctx.Pipe()
    proc = mpctx.Process(target=_child, args=(child, ctx.stack.database_url, concurrency, duration))
    proc.start()
    assert proc.pid is not None
    meter = CpuMeter({"postgres": ctx.stack.postmaster_pid(), "loadgen": proc.pid})
    meter.start()
    result: dict[str, Any] = parent.recv()
    cpu = meter.stop()
    proc.join()
    result.update(
        concurrency=concurrency, cpu_s=cpu, loadavg_before=meter.load_before, loadavg_after=meter.load_after
    )
    if "inserts" in result:
        result["cpu_s_per_1000_inserts"] = per_thousand(cpu, result["inserts"])
        log(f"db ceiling: {result['inserts_per_s']} inserts/s, p99 {result['latency_ms']['p99']} ms")
    return result
