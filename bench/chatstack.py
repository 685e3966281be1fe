"""The stack under test: chatd's own local stack (chatd.devstack.Stack), tuned for load.

The nginx limits differ from `chatd dev up`, set through Stack's nginx_* fields: each nginx
worker may hold up to 19,500 connections (the box allows 20,000 open files per process) and the
listening socket uses `reuseport` so the kernel spreads connections evenly over the nginx
workers. Redis appends to its AOF every second, as in production (the local stack keeps
nothing). Every setting that still differs from production is in `deviations()`, with its
reason; the results record them and docs/benchmarks.md's Method section lists them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procstat import tree
from chatd.config import Settings
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
# Why each BENCH_ENV setting differs from chatd's default (docs/benchmarks.md, Method).
REASONS = {
    "CHATD_RATE_LIMIT_MESSAGES": "a few load-generator users send thousands of messages/s; the limit"
    " is still consulted on every send (one Redis round trip per batch), so its cost is measured",
    "CHATD_RATE_LIMIT_WINDOW_S": "with the limit above, a 1 s window: no bench user is ever limited",
    "CHATD_ARGON2_TIME_COST": "setup only: the population logs in thousands of users before any step",
    "CHATD_ARGON2_MEMORY_KIB": "setup only, as above",
    "CHATD_LOGIN_RATE_LIMIT": "setup only: thousands of logins from one address",
    "CHATD_LOGIN_ADDRESS_RATE_LIMIT": "setup only: thousands of logins from one address",
    "CHATD_REGISTER_RATE_LIMIT": "setup only: thousands of registrations from one address",
    "CHATD_GROUP_RATE_LIMIT": "setup only: the fan-out scenario creates hundreds of groups",
    "CHATD_ARGON2_QUEUE": "setup only: thousands of concurrent logins",
    "CHATD_REGISTRATION": "setup only: the population registers without invites",
    "CHATD_SEND_QUEUE_FRAMES": "saturation steps push the load generators (on the same cores) behind;"
    " at the default chatd closes a socket whose queue is full (a slow consumer), which would end a"
    " ramp with disconnects instead of latency figures. No headline depends on it: at p99 <= 100 ms a"
    " socket's queue holds about a tenth of a second of its deliveries, far below the default",
    "CHATD_PRESENCE_MAX_GROUP_SIZE": "scenario 5 measures presence pushes to groups of up to ~200"
    " members, which the default leaves out of presence",
}
# settings of the stack itself (not chatd's) that differ from the Ansible roles' defaults
STACK_DEVIATIONS = [
    (
        "nginx worker_connections, listen reuseport",
        f"{NGINX_WORKER_CONNECTIONS}, reuseport",
        "ansible/roles/nginx/defaults/main.yml:nginx_worker_connections, no reuseport",
        "the box allows 20,000 open files per process; reuseport spreads scenario 3's 15,000+"
        " connections evenly over the nginx workers",
    ),
    (
        "PostgreSQL shared_buffers",
        "256MB (chatd.devstack)",
        "ansible/roles/postgresql/defaults/main.yml:postgresql_shared_buffers",
        "the local stack's setting; the bench's tables stay far smaller than either",
    ),
    (
        "PostgreSQL max_connections",
        "300 (chatd.devstack)",
        "ansible/roles/postgresql/defaults/main.yml:postgresql_max_connections",
        "the local stack's setting: chatd's pools, the peers' and baseline (a)'s 32 connections at once",
    ),
    (
        "Hosts",
        "everything on one box, over loopback and unix sockets",
        "PostgreSQL, Redis and the workers may be on separate hosts (docs/operations.md)",
        "one shared box: no network latency, but every process competes for the same cores",
    ),
]
ROLES = Path(__file__).resolve().parent.parent / "ansible" / "roles"
CALLS_CLIENTS: dict[int, Any] = {}  # Redis port -> the connection that counts its commands


CLUSTER_NODES = 6  # `--redis-cluster`: 3 primaries and a replica each (chatd.devcluster)


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

    def start_redis(self) -> None:
        """The local stack's Redis (or each cluster node) with production's persistence
        (ansible/roles/redis: AOF, fsync every second) instead of none."""
        super().start_redis()
        for port in self.redis_cluster_ports or [self.redis_port]:
            self.save_redis_config(port, "appendonly", "yes")
            self.save_redis_config(port, "appendfsync", "everysec")

    def save_redis_config(self, port: int, key: str, value: str) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, password=self.redis_password)
        try:
            client.config_set(key, value)
        finally:
            client.close()

    def redis_calls(self) -> dict[str, int]:
        """Commands Redis has run so far, by name (INFO commandstats), for whoever uses it: chatd
        and the peers that publish through it. One kept connection per Redis (not on the stack,
        which is pickled to other processes), so that only the INFO commands add to the counts."""
        if not self.redis_cluster_ports:
            return _calls(self.redis_port, self.redis_password)
        # on a cluster: the commands every primary ran (the first half of the ports start as
        # primaries; the bench fails none over)
        total: dict[str, int] = {}
        for port in self.redis_cluster_ports[: CLUSTER_NODES // 2]:
            for name, calls in _calls(port, self.redis_password).items():
                total[name] = total.get(name, 0) + calls
        return total

    def postmaster_pid(self) -> int:
        return int((self.root / "pg" / "postmaster.pid").read_text().split()[0])

    def process_roots(self) -> dict[str, int]:
        """Named process trees to account CPU to (each worker separately)."""
        roots = {name: pid for name, pid in self.pids.items() if name.startswith("worker-")}
        roots["nginx"] = self.pids["nginx"]
        roots["postgres"] = self.postmaster_pid()
        # each cluster node apart ("redis-<port>"): report.cpu_by_group adds up "redis-*"
        roots.update({name: pid for name, pid in self.pids.items() if name.split("-")[0] == "redis"})
        return roots

    def worker_pids(self) -> list[int]:
        return [pid for name, pid in sorted(self.pids.items()) if name.startswith("worker-")]

    def nginx_worker_pids(self) -> list[int]:
        master = self.pids["nginx"]
        return [pid for pid in tree(master) if pid != master]


def _calls(port: int, password: str) -> dict[str, int]:
    import redis

    client = CALLS_CLIENTS.get(port)
    if client is None:
        client = CALLS_CLIENTS[port] = redis.Redis(host="127.0.0.1", port=port, password=password)
    try:
        stats = client.info("commandstats")
    except Exception:
        CALLS_CLIENTS.pop(port, None)
        raise
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def start(
    root: Path,
    workers: int,
    extra_env: dict[str, str] | None = None,
    worker_env: dict[int, dict[str, str]] | None = None,
    redis_cluster: bool = False,
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
        if redis_cluster:
            from chatd.devcluster import free_ports

            stack.redis_cluster_ports = free_ports(CLUSTER_NODES)
        stack.up()
    except BaseException:
        stack.down()
        raise
    return stack


def _role_default(path: str) -> str:
    """ "ansible/roles/<role>/defaults/main.yml:<variable>" -> its value there, as text."""
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type hints

    file, _, name = path.partition(":")
    name = name.split(",")[0]
    data = yaml.safe_load((ROLES.parent.parent / file).read_text())
    return f"{data.get(name)} ({path.split('/')[2]} role)"


def deviations() -> list[dict[str, Any]]:
    """Every setting in which the bench's stack differs from production's defaults, with the
    production value read from chatd's config and the Ansible roles (no number written twice)."""
    defaults = {f"CHATD_{f.name.upper()}": f.metadata["default"] for f in dataclasses.fields(Settings)}
    out: list[dict[str, Any]] = []
    for name, value in BENCH_ENV.items():
        if defaults.get(name) != value:
            out.append(
                {"setting": name, "bench": value, "production": defaults.get(name), "reason": REASONS[name]}
            )
    for setting, bench, production, reason in STACK_DEVIATIONS:
        if production.startswith("ansible/"):
            tail = production.partition(",")[2]
            production = _role_default(production) + ("," + tail if tail else "")
        out.append({"setting": setting, "bench": bench, "production": production, "reason": reason})
    return out
