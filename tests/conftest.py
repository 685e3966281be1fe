"""One real stack for the session: PostgreSQL, Redis, nginx and two chatd workers on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from chatd.devcluster import free_ports
from chatd.devstack import Stack
from chatd.processes import free_port
from tests.helpers import Api, wait_for_ready

TEST_ENV = {
    # argon2id still, with a cheap cost so hundreds of test logins stay fast
    "CHATD_ARGON2_TIME_COST": "1",
    "CHATD_ARGON2_MEMORY_KIB": "1024",
    "CHATD_RATE_LIMIT_MESSAGES": "1000000",
    "CHATD_USER_LOOKUP_RATE_LIMIT": "1000",
    "CHATD_GROUP_RATE_LIMIT": "1000000",  # test users create groups freely; one test has its own
    "CHATD_LOGIN_RATE_LIMIT": "5",  # each test user logs in once; one test hits the limit
    # hundreds of users register and log in from 127.0.0.1, many at once; the tests of these
    # limits spawn workers of their own with low ones
    "CHATD_LOGIN_ADDRESS_RATE_LIMIT": "1000000",
    "CHATD_REGISTER_RATE_LIMIT": "1000000",
    "CHATD_ARGON2_QUEUE": "100000",
    # hundreds of users register, most with no invite; the daemon's default is `invite`, whose
    # tests spawn workers of their own with it
    "CHATD_REGISTRATION": "open",
    "CHATD_AUTH_TIMEOUT_S": "2",
    "CHATD_GAP_FILL_DELAY_S": "0.1",
    "CHATD_LOG_LEVEL": "info",
    "CHATD_RECEIPT_FLUSH_INTERVAL_S": "1",
    "CHATD_RECEIPT_PUSH_INTERVAL_MS": "300",
    # short presence timings so crash and grace tests take seconds, not minutes
    "CHATD_PRESENCE_TTL_S": "3",
    "CHATD_PRESENCE_HEARTBEAT_S": "1",
    "CHATD_PRESENCE_SWEEP_S": "0.5",
    "CHATD_PRESENCE_GRACE_S": "2",
    # Web Push to the tests' own push service on loopback (tests/pushserver.py); one sender per
    # worker, so a later push arriving proves the earlier ones were sent or never made
    "CHATD_PUSH_SERVICES": "http://127.0.0.1",
    "CHATD_PUSH_INTERVAL_S": "2",
    "CHATD_PUSH_AWAY_DELAY_S": "1",
    "CHATD_PUSH_CONCURRENCY": "1",
    "CHATD_PUSH_TIMEOUT_S": "5",
    # the download cache is swept only just after a worker starts: a test that leaves a copy of a
    # deleted file in place checks it is still there; the sweep's test spawns a worker of its own
    "CHATD_FILES_CACHE_SWEEP_S": "86400",
}


@pytest.fixture(scope="session")
def redis_stack() -> Iterator[Stack]:
    yield from _stack()


@pytest.fixture(scope="session")
def cluster_stack() -> Iterator[Stack]:
    """A second stack whose workers use a local Redis Cluster (3 primaries, 3 replicas)."""
    yield from _stack(free_ports(6))


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Stack:
    """The session's stack on one Redis; in a module marked `both_redis`, each test runs once
    on it and once on the Redis Cluster stack (pytest_generate_tests)."""
    mode = getattr(request, "param", "redis")
    found: Stack = request.getfixturevalue(f"{mode}_stack")
    return found


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_redis: run against one Redis and a Redis Cluster")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_redis") and "stack" in metafunc.fixturenames:
        metafunc.parametrize("stack", ["redis", "cluster"], indirect=True)


def _stack(redis_cluster_ports: list[int] | None = None) -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="chatd-test-"))
    stack = Stack(root=root, workers=2, tcp_workers=True, extra_env=TEST_ENV)
    stack.redis_cluster_ports = redis_cluster_ports or []
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
        if os.environ.get("CHATD_KEEP_TEST_DIR") is None:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def nginx(stack: Stack) -> AsyncIterator[Api]:
    api = Api(stack.url)
    yield api
    await api.http.aclose()


@pytest.fixture
async def w1(stack: Stack) -> AsyncIterator[Api]:
    api = Api(stack.worker_url(0))
    yield api
    await api.http.aclose()


@pytest.fixture
async def w2(stack: Stack) -> AsyncIterator[Api]:
    api = Api(stack.worker_url(1))
    yield api
    await api.http.aclose()


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(stack.database_url)
    yield conn
    await conn.close()


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log


@pytest.fixture
def spawn_worker(stack: Stack) -> Iterator[Callable[..., Worker]]:
    """Start an extra `chatd serve` against the session's Postgres and Redis, with env overrides."""
    started: list[Worker] = []

    def spawn(wait_ready: bool = True, **env: str) -> Worker:
        port = free_port()
        log = stack.root / "logs" / f"extra-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "chatd", "serve", "--port", str(port)],
                env={**stack.env(), **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(proc, port, log)
        started.append(worker)
        if wait_ready:
            wait_for_ready(proc, worker.url, log)
        return worker

    yield spawn
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(10)


@pytest.fixture
def private_redis(stack: Stack) -> Iterator[str]:
    """A Redis server of its own: for tests that count Redis commands, and for any worker that
    must not share the session's Redis state. Never a second DB number on the session's Redis:
    pub/sub ignores the DB, so its workers would still share every channel."""
    if stack.redis_cluster_ports:
        pytest.skip("uses a single Redis of its own: runs with the single-Redis stack only")
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="chatd-redis-"))
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )
    stack._wait_tcp(port)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Isolated:
    """A worker on a database (and a Redis) of its own: the admins there are only the test's."""

    api: Api
    db: asyncpg.Connection
    env: dict[str, str]
    worker: Worker


@pytest.fixture
async def isolated(
    stack: Stack, db: asyncpg.Connection, spawn_worker: Callable[..., Worker], private_redis: str
) -> AsyncIterator[Isolated]:
    name = f"chatd_{uuid.uuid4().hex[:12]}"
    await db.execute(f"CREATE DATABASE {name}")
    url = stack.database_url.rsplit("/", 1)[0] + f"/{name}"
    env = {**stack.env(), "CHATD_DATABASE_URL": url, "CHATD_REDIS_URL": private_redis}
    subprocess.run([sys.executable, "-m", "chatd", "migrate"], env=env, check=True, capture_output=True)
    worker = spawn_worker(CHATD_DATABASE_URL=url, CHATD_REDIS_URL=private_redis)
    conn = await asyncpg.connect(url)
    api = Api(worker.url)
    try:
        yield Isolated(api, conn, env, worker)
    finally:
        await api.http.aclose()
        await conn.close()
        worker.proc.kill()
        worker.proc.wait(10)
        await db.execute(f"DROP DATABASE {name} WITH (FORCE)")


class RedisServer:
    """A redis-server this test can stop, restart (empty), pause (SIGSTOP) and resume."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="chatd-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--bind", "127.0.0.1", "--port", str(self.port)),
                *("--save", "", "--appendonly", "no", "--dir", str(self.dir)),
            ],
            stdout=subprocess.DEVNULL,
        )
        self.stack._wait_tcp(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        """As `systemctl restart` does: SIGTERM, wait for the exit, start again (empty)."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)
        self.start()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def command(self, *args: str) -> object:
        client = aioredis.Redis.from_url(self.url, socket_timeout=5)
        try:
            return await client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            await client.aclose()


@pytest.fixture
def redis_server(stack: Stack) -> Iterator[RedisServer]:
    server = RedisServer(stack)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)
