"""Reads from a Postgres streaming replica (CHATD_DATABASE_REPLICA_URL, issue 25): history,
catch-up and unread counts go to a real hot standby of the session's Postgres when it has
replayed what the read needs and is within the lag bound, and to the primary otherwise; a
client's catch-up stays gapless while the standby's replay is paused."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatd.config import ConfigError, Settings
from chatd.devstack import Stack
from chatd.processes import free_port
from chatd.storage.replica import Replica
from tests.helpers import Api, User, Ws, serve_argv, wait_for_ready
from tests.standby import run_standby


@pytest.fixture(scope="module")
def standby_port(stack: Stack) -> Iterator[int]:
    with run_standby(stack) as standby:
        yield standby.port


def replica_url(stack: Stack, port: int) -> str:
    url = urlsplit(stack.database_url)
    user = url.netloc.rpartition("@")[0]
    return str(url._replace(netloc=f"{user}@127.0.0.1:{port}", query="target_session_attrs=standby").geturl())


@dataclass
class Worker:
    api: Api
    metrics_url: str

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.metrics_url, timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def reads(self) -> dict[str, float]:
        """Replica-eligible reads so far: by server, and the primary's by reason."""
        found = {s: self.metric("chatd_replica_reads_total", server=s) for s in ("primary", "replica")}
        for reason in ("behind", "lag", "error"):
            found[reason] = self.metric("chatd_replica_fallbacks_total", reason=reason)
        return found


@pytest.fixture
async def replica_worker(stack: Stack) -> AsyncIterator[Callable[..., Worker]]:
    """A `chatd serve` with a replica URL (and its /metrics), like conftest's spawn_worker."""
    procs: list[subprocess.Popen[bytes]] = []
    apis: list[Api] = []

    def spawn(url: str, max_lag_s: float) -> Worker:
        port, metrics_port = free_port(), free_port()
        log = stack.root / "logs" / f"replica-{port}.log"
        env = {
            **stack.env(),
            "CHATD_DATABASE_REPLICA_URL": url,
            "CHATD_DATABASE_REPLICA_MAX_LAG_S": str(max_lag_s),
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(
                serve_argv(port, metrics_port), env=env, stdout=out, stderr=subprocess.STDOUT
            )
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        wait_for_ready(proc, base, log)
        apis.append(Api(base))
        return Worker(apis[-1], f"http://127.0.0.1:{metrics_port}/metrics")

    yield spawn
    for api in apis:
        await api.http.aclose()
    for proc in procs:
        proc.kill()
        proc.wait(10)


async def caught_up(primary: asyncpg.Connection, standby: asyncpg.Connection) -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    target = await primary.fetchval("SELECT pg_current_wal_lsn()")
    async with asyncio.timeout(30):
        while True:
            if await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1", target):
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def standby(stack: Stack, standby_port: int) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(replica_url(stack, standby_port))
    yield conn
    await conn.execute("SELECT pg_wal_replay_resume()")  # whatever the test did
    await conn.close()


async def reconnect(api: Api, user: User, since: dict[int, int]) -> tuple[Ws, list[int]]:
    """Connect with `since`; the seqs caught up (before `synced`) and the `ready` frame."""
    ws = await Ws.connect(api.base_url, user.token, since=since)
    synced = next(i for i, f in enumerate(ws.frames) if f["type"] == "synced")
    cid = next(iter(since))
    seqs = [f["seq"] for f in ws.frames[:synced] if f["type"] == "message" and f["conversation_id"] == cid]
    return ws, seqs


async def until_replica(worker: Worker, user: User, cid: int) -> None:
    """Read history until the replica answers: the worker has measured its lag (a first probe
    that finds it behind the primary's WAL cannot tell by how long: the primary answers)."""
    async with asyncio.timeout(10):
        while True:
            before = worker.reads()["replica"]
            await worker.api.history(user, cid)
            if worker.reads()["replica"] > before:
                return
            await asyncio.sleep(0.1)


def unread(ws: Ws, cid: int) -> int:
    [conv] = [c for c in ws.ready["conversations"] if c["id"] == cid]
    count: int = conv["unread"]
    return count


async def test_catch_up_stays_gapless_while_the_replica_lags(
    stack: Stack, standby_port: int, standby: asyncpg.Connection, db: asyncpg.Connection,
    w1: Api, replica_worker: Callable[..., Worker],
) -> None:  # fmt: skip
    worker = replica_worker(replica_url(stack, standby_port), 60)
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    for i in range(1, 4):
        assert (await a.send(cid, f"m{i}"))["type"] == "ack"
    await caught_up(db, standby)
    await until_replica(worker, bob, cid)

    # The standby has everything: it answers catch-up, the unread counts and history.
    before = worker.reads()
    b, seqs = await reconnect(worker.api, bob, {cid: 0})
    assert seqs == [1, 2, 3] and unread(b, cid) == 3
    await b.close()
    assert [m["seq"] for m in await worker.api.history(bob, cid)] == [1, 2, 3]
    after = worker.reads()
    assert after["replica"] - before["replica"] >= 3
    assert after["primary"] == before["primary"]

    # Replay paused: what was sent since is on the primary only. Catch-up, the counts and
    # history still have all of it, read from the primary (the standby is behind).
    await standby.execute("SELECT pg_wal_replay_pause()")
    for i in range(4, 9):
        assert (await a.send(cid, f"m{i}"))["type"] == "ack"
    before = worker.reads()
    b, seqs = await reconnect(worker.api, bob, {cid: 3})
    assert seqs == [4, 5, 6, 7, 8], "catch-up missed what the replica has not replayed"
    assert unread(b, cid) == 8
    await b.close()
    assert [m["seq"] for m in await worker.api.history(bob, cid)] == list(range(1, 9))
    assert [m["seq"] for m in await worker.api.history(bob, cid, before=3)] == [1, 2]
    after = worker.reads()
    assert after["behind"] - before["behind"] >= 3
    assert after["lag"] == before["lag"] and after["error"] == before["error"]
    # A page that needs nothing the standby lacks is still the standby's.
    assert after["replica"] - before["replica"] >= 1

    # Replay resumed: the standby answers again, and has it all.
    await standby.execute("SELECT pg_wal_replay_resume()")
    await caught_up(db, standby)
    before = worker.reads()
    b, seqs = await reconnect(worker.api, bob, {cid: 3})
    assert seqs == [4, 5, 6, 7, 8] and unread(b, cid) == 8
    await b.close()
    assert [m["seq"] for m in await worker.api.history(bob, cid)] == list(range(1, 9))
    after = worker.reads()
    assert after["replica"] - before["replica"] >= 3
    assert after["primary"] == before["primary"]
    await a.close()


async def test_past_the_lag_bound_the_primary_answers(
    stack: Stack, standby_port: int, standby: asyncpg.Connection, db: asyncpg.Connection,
    w1: Api, replica_worker: Callable[..., Worker],
) -> None:  # fmt: skip
    worker = replica_worker(replica_url(stack, standby_port), 0.5)
    alice, bob, carol = await w1.user(), await w1.user(), await w1.user()
    quiet, busy = await w1.direct(alice, bob), await w1.direct(alice, carol)
    a = await Ws.connect(w1.base_url, alice.token)
    assert (await a.send(quiet, "hello"))["type"] == "ack"
    await caught_up(db, standby)
    await until_replica(worker, bob, quiet)

    # Replay paused and the primary written since: the standby falls behind by more than the
    # bound, so even a conversation it has whole is read from the primary.
    await standby.execute("SELECT pg_wal_replay_pause()")
    assert (await a.send(busy, "elsewhere"))["type"] == "ack"
    await asyncio.sleep(1)
    before = worker.reads()
    assert [m["seq"] for m in await worker.api.history(bob, quiet)] == [1]
    after = worker.reads()
    assert after["lag"] == before["lag"] + 1 and after["primary"] == before["primary"] + 1

    await standby.execute("SELECT pg_wal_replay_resume()")
    await caught_up(db, standby)
    await until_replica(worker, bob, quiet)
    await a.close()


async def test_a_replica_that_stops_is_passed_over_until_it_is_back(
    stack: Stack, db: asyncpg.Connection, w1: Api, replica_worker: Callable[..., Worker]
) -> None:
    """The replica stops under a worker that reads from it (its pooled connections die): the
    primary answers, and the replica again once it is back."""
    with run_standby(stack) as own:
        worker = replica_worker(replica_url(stack, own.port), 60)
        alice, bob = await w1.user(), await w1.user()
        cid = await w1.direct(alice, bob)
        a = await Ws.connect(w1.base_url, alice.token)
        assert (await a.send(cid, "m1"))["type"] == "ack"
        standby = await asyncpg.connect(replica_url(stack, own.port))
        await caught_up(db, standby)
        await standby.close()
        await until_replica(worker, bob, cid)

        own.stop()
        assert (await a.send(cid, "m2"))["type"] == "ack"
        before = worker.reads()
        b, seqs = await reconnect(worker.api, bob, {cid: 0})
        assert seqs == [1, 2] and unread(b, cid) == 2
        await b.close()
        assert [m["seq"] for m in await worker.api.history(bob, cid)] == [1, 2]
        after = worker.reads()
        assert after["error"] - before["error"] >= 3 and after["replica"] == before["replica"]

        own.start()
        standby = await asyncpg.connect(replica_url(stack, own.port))
        await caught_up(db, standby)
        await standby.close()
        await until_replica(worker, bob, cid)
        await a.close()


async def test_without_the_replica_everything_works_from_the_primary(
    stack: Stack, w1: Api, replica_worker: Callable[..., Worker]
) -> None:
    """The replica down (nothing listens at its address): reads go to the primary."""
    worker = replica_worker(replica_url(stack, free_port()), 5)
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    for i in range(1, 4):
        assert (await a.send(cid, f"m{i}"))["type"] == "ack"
    b, seqs = await reconnect(worker.api, bob, {cid: 1})
    assert seqs == [2, 3] and unread(b, cid) == 3
    assert (await b.send(cid, "from the replica's worker"))["type"] == "ack"
    await b.close()
    assert [m["seq"] for m in await worker.api.history(bob, cid)] == [1, 2, 3, 4]
    reads = worker.reads()
    assert reads["replica"] == 0 and reads["primary"] >= 3 and reads["error"] >= 3
    await a.close()


def test_the_lag_is_the_age_of_the_newest_primary_position_the_replica_replayed() -> None:
    """WAL positions of the primary noted with this process's clock: no clocks compared."""
    replica = Replica(cast(asyncpg.Pool, None), "postgresql://replica/chatd", 5)
    now = time.monotonic()
    assert replica.lag(now - 20, 100, 50) == float("inf")  # behind all it knows: since when?
    assert replica.lag(now - 10, 200, 200) == 0  # replayed all the primary had
    assert replica.lag(now - 8, 300, 250) == pytest.approx(10, abs=1)  # past 200, noted 10 s ago
    assert replica.lag(now - 1, 400, 350) == pytest.approx(8, abs=1)  # past 300, noted 8 s ago
    assert replica.lag(now, 500, None) == 0  # not in recovery: nothing to replay


def test_the_replica_url_takes_the_database_credential(tmp_path: Path) -> None:
    """The replica is the primary's copy: the same role, so the same credential; unset, off."""
    (tmp_path / "database-password").write_text("p@ss/word")
    base = {"CHATD_DATABASE_URL": "postgresql://chatd@db1/chatd", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert Settings.from_env(base).database_replica_url == ""
    url = "postgresql://chatd@db2:5432,db3/chatd?target_session_attrs=standby"
    settings = Settings.from_env({**base, "CHATD_DATABASE_REPLICA_URL": url})
    assert settings.database_replica_url == (
        "postgresql://chatd:p%40ss%2Fword@db2:5432,db3/chatd?target_session_attrs=standby"
    )
    with pytest.raises(ConfigError, match="CHATD_DATABASE_REPLICA_URL"):
        Settings.from_env({**base, "CHATD_DATABASE_REPLICA_URL": "redis://db2/0"})
