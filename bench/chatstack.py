"""The stack under test: chatd's own local stack (chatd.devstack.Stack), tuned for load.

Only the nginx limits differ from `chatd dev up`, set through Stack's nginx_* fields: each
nginx worker may hold up to 19,500 connections (the box allows 20,000 open files per process)
and the listening socket uses `reuseport` so the kernel spreads connections evenly over the
nginx workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.procstat import tree
from chatd.devstack import Stack

BENCH_ENV = {
    # the config caps this at 1,000,000 per window: with a 1 s window no bench user is limited
    "CHATD_RATE_LIMIT_MESSAGES": "1000000",
    "CHATD_RATE_LIMIT_WINDOW_S": "1",
    "CHATD_ARGON2_TIME_COST": "1",
    "CHATD_ARGON2_MEMORY_KIB": "1024",
    "CHATD_LOGIN_RATE_LIMIT": "1000000",
    # the population registers and logs in thousands of users from one address, many at once
    "CHATD_LOGIN_ADDRESS_RATE_LIMIT": "1000000",
    "CHATD_REGISTER_RATE_LIMIT": "1000000",
    "CHATD_GROUP_RATE_LIMIT": "1000000",
    "CHATD_ARGON2_QUEUE": "100000",
    # the population registers thousands of users without invites (the daemon's default is
    # `invite`, docs/operations.md "Accounts and admins")
    "CHATD_REGISTRATION": "open",
    "CHATD_SEND_QUEUE_FRAMES": "20000",
    # scenario 5's groups hold up to ~200 members (50 plus the churners spread over them): it
    # measures how fast a presence change reaches them, so they must get presence pushes
    "CHATD_PRESENCE_MAX_GROUP_SIZE": "1000",
}
NGINX_WORKER_CONNECTIONS = 19500


@dataclass
class BenchStack(Stack):
    # settings for one worker only (0-based index), e.g. CHATD_METRICS=off on one of two workers
    # to compare their CPU under the same load in the same run
    worker_env: dict[int, dict[str, str]] = field(default_factory=dict)

    def start_worker(self, index: int) -> None:
        common = self.extra_env
        self.extra_env = {**common, **self.worker_env.get(index, {})}
        try:
            super().start_worker(index)
        finally:
            self.extra_env = common

    def postmaster_pid(self) -> int:
        return int((self.root / "pg" / "postmaster.pid").read_text().split()[0])

    def process_roots(self) -> dict[str, int]:
        """Named process trees to account CPU to (each worker separately)."""
        roots = {name: pid for name, pid in self.pids.items() if name.startswith("worker-")}
        roots["nginx"] = self.pids["nginx"]
        roots["postgres"] = self.postmaster_pid()
        roots["redis"] = self.pids["redis"]
        return roots

    def worker_pids(self) -> list[int]:
        return [pid for name, pid in sorted(self.pids.items()) if name.startswith("worker-")]

    def nginx_worker_pids(self) -> list[int]:
        master = self.pids["nginx"]
        return [pid for pid in tree(master) if pid != master]


def start(
    root: Path,
    workers: int,
    extra_env: dict[str, str] | None = None,
    worker_env: dict[int, dict[str, str]] | None = None,
) -> BenchStack:
    env = {**BENCH_ENV, **(extra_env or {})}
    stack = BenchStack(
        root=root,
        workers=workers,
        extra_env=env,
        worker_env=worker_env or {},
        nginx_worker_connections=NGINX_WORKER_CONNECTIONS,
        nginx_reuseport=True,
    )
    try:
        stack.up()
    except BaseException:
        stack.down()
        raise
    return stack
