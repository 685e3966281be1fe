"""A private stack on loopback: PostgreSQL, Redis, N chatd workers and nginx in one directory.

`chatd dev up` runs it for people; the test suite runs the same code in a temporary directory.
nginx uses the production site template (nginx/chatd.conf.j2).
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from chatd import devcluster, devpostgres
from chatd.devnginx import web_root as web_root  # re-exported for `chatd dev` and bench/
from chatd.devnginx import write_config
from chatd.processes import StackError as StackError  # raised to `chatd dev`
from chatd.processes import alive as _alive
from chatd.processes import free_port as free_port  # re-exported for bench/ and older callers
from chatd.processes import need as _need
from chatd.processes import pg_bin as _pg_bin
from chatd.processes import run as _run
from chatd.processes import wait_tcp

STATE = "stack.json"


@dataclass
class Stack:
    root: Path
    workers: int = 2
    tcp_workers: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    nginx_worker_connections: int = 10000  # per nginx worker; a proxied WebSocket takes two
    nginx_reuseport: bool = False  # one listening socket per worker: the kernel spreads connections
    # Edge limits per client address (nginx/chatd.conf.j2). Production (the Ansible nginx role)
    # is strict; here everything comes from 127.0.0.1 (tests register hundreds of users, the
    # benchmark holds thousands of sockets), so the defaults are permissive.
    nginx_auth_rate: str = "100000r/s"
    nginx_auth_burst: int = 100000
    nginx_ws_conn_per_addr: int = 65535  # nginx's maximum
    pg_port: int = 0
    redis_port: int = 0
    redis_cluster_ports: list[int] = field(default_factory=list)  # a Redis Cluster (devcluster.py)
    http_port: int = 0
    worker_ports: list[int] = field(default_factory=list)
    metrics_ports: list[int] = field(default_factory=list)  # each worker's /metrics on loopback
    db_password: str = ""
    redis_password: str = ""
    pids: dict[str, int] = field(default_factory=dict)

    # -- paths and urls ------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def database_url(self) -> str:
        return f"postgresql://chatd:{self.db_password}@127.0.0.1:{self.pg_port}/chatd"

    @property
    def redis_url(self) -> str:
        if self.redis_cluster_ports:
            return self.cluster().seed_url
        return f"redis://:{self.redis_password}@127.0.0.1:{self.redis_port}/0"

    def worker_bind(self, index: int) -> str:
        if self.tcp_workers:
            return f"127.0.0.1:{self.worker_ports[index]}"
        return f"unix:{self.root / 'run' / f'chatd-{index + 1}.sock'}"

    def worker_url(self, index: int) -> str:
        """Direct URL of one worker (TCP workers only), bypassing nginx."""
        return f"http://127.0.0.1:{self.worker_ports[index]}"

    def metrics_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.metrics_ports[index]}/metrics"

    @property
    def vapid_key_file(self) -> Path:
        """The stack's own VAPID key (Web Push), made once by `up` like its passwords."""
        return self.root / "vapid.pem"

    @property
    def files_cache_dir(self) -> Path:
        """The attachments' download cache the workers fill and nginx serves."""
        return self.root / "files-cache"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CHATD_DATABASE_URL": self.database_url,
            "CHATD_REDIS_URL": self.redis_url,
            "CHATD_PUSH_VAPID_KEY_FILE": str(self.vapid_key_file),
            "CHATD_FILES_CACHE_DIR": str(self.files_cache_dir),
            "CHATD_REDIS_CLUSTER": "on" if self.redis_cluster_ports else "off",
            **self.extra_env,
        }

    def save(self) -> None:
        """Write stack.json (it holds the passwords): created 0600, replaced atomically."""
        state = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        tmp = self.root / f".{STATE}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(state, indent=2))
        os.replace(tmp, self.root / STATE)

    @classmethod
    def load(cls, root: Path) -> Stack:
        state = json.loads((root / STATE).read_text())
        state["root"] = Path(state["root"])
        return cls(**state)

    def make_files_cache(self) -> None:
        """Like production (the chatd role): the workers' files, read by nginx's user through
        the group. Run as root, nginx's workers are nobody:nogroup, so the directory's group is
        nogroup and new files inherit it (setgid)."""
        cache = self.files_cache_dir
        cache.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            os.chown(cache, 0, grp.getgrnam("nogroup").gr_gid)
            cache.chmod(0o2750)
        else:
            cache.chmod(0o750)

    # -- lifecycle -----------------------------------------------------------------------
    def process_names(self) -> list[str]:
        return ["postgres", "redis", *(f"worker-{i + 1}" for i in range(self.workers)), "nginx"]

    def running(self, name: str) -> bool:
        if name == "postgres":
            status = [_pg_bin("pg_ctl"), "-D", str(self.root / "pg"), "status"]
            return (self.root / "pg" / "postmaster.pid").exists() and subprocess.run(
                devpostgres.as_postgres(status),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            ).returncode == 0
        if name == "redis" and self.redis_cluster_ports:
            return all(self.running(f"redis-{port}") for port in self.redis_cluster_ports)
        pid = self.pids.get(name)
        if not pid or not _alive(pid):
            return False
        try:  # a recycled pid is some other program
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return (b"chatd" if name.startswith("worker-") else name.split("-")[0].encode()) in cmdline

    def status(self) -> dict[str, bool]:
        return {name: self.running(name) for name in self.process_names()}

    def up(self) -> None:
        """Start whatever is not running: a fresh stack, a stopped one, or a partly running one."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # nginx's and postgres's users must traverse it
        for sub in ("logs", "run", "redis", "nginx/tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "run").chmod(0o755)
        (self.root / "nginx/tmp").chmod(0o777)
        self.make_files_cache()
        self.pg_port = self.pg_port or free_port()
        self.redis_port = self.redis_port or free_port()
        self.http_port = self.http_port or free_port()
        if self.tcp_workers and not self.worker_ports:
            self.worker_ports = [free_port() for _ in range(self.workers)]
        if not self.metrics_ports:
            self.metrics_ports = [free_port() for _ in range(self.workers)]
        self.db_password = self.db_password or secrets.token_urlsafe(18)
        self.redis_password = self.redis_password or secrets.token_urlsafe(18)
        if not self.vapid_key_file.exists():
            from chatd.webpush import generate_key_pem

            fd = os.open(self.vapid_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(generate_key_pem())
        self.save()
        if not self.running("postgres"):
            self.start_postgres(init=True)
        if not self.running("redis"):
            self.start_redis()
        self.migrate()
        for index in range(self.workers):
            if not self.running(f"worker-{index + 1}"):
                self.start_worker(index)
        if not self.running("nginx"):
            self.start_nginx()
        self.save()

    def down(self) -> None:
        for name in sorted(self.pids, reverse=True):
            if name.startswith("worker-"):
                self.stop_worker(int(name.removeprefix("worker-")) - 1)
        if "nginx" in self.pids:
            self._signal("nginx", signal.SIGQUIT)
            self._wait_gone("nginx", 10)
        for name in [name for name in self.pids if name.split("-")[0] == "redis"]:
            self._signal(name, signal.SIGTERM)
            self._wait_gone(name, 10)
        self.stop_postgres()
        self.save()

    # -- postgres ------------------------------------------------------------------------
    def start_postgres(self, init: bool = False) -> None:
        if init:
            devpostgres.init(self.root / "pg", self.pg_port, self.db_password)
        devpostgres.start(self.root / "pg")
        if init:
            devpostgres.create_database(self.pg_port, self.db_password)

    def stop_postgres(self, mode: str = "fast") -> None:
        devpostgres.stop(self.root / "pg", mode)

    def restart_postgres(self, mode: str = "immediate") -> None:
        """Stop (by default like a crash: no checkpoint) and start again."""
        self.stop_postgres(mode)
        self.start_postgres()

    # -- redis ---------------------------------------------------------------------------
    def cluster(self) -> devcluster.Cluster:
        nodes = {
            port: self.pids[f"redis-{port}"]
            for port in self.redis_cluster_ports
            if f"redis-{port}" in self.pids
        }
        return devcluster.Cluster(self.root / "redis", self.redis_cluster_ports, self.redis_password, nodes)

    def start_redis(self) -> None:
        if self.redis_cluster_ports:
            for port in self.redis_cluster_ports:  # a fresh (empty) cluster
                shutil.rmtree(self.root / "redis" / str(port), ignore_errors=True)
            cluster = devcluster.start_cluster(
                self.root / "redis", self.redis_cluster_ports, self.redis_password
            )
            self.pids.update({f"redis-{port}": pid for port, pid in cluster.nodes.items()})
            return
        conf = self.root / "redis" / "redis.conf"
        conf.write_text(
            f"bind 127.0.0.1\nport {self.redis_port}\ndir {self.root / 'redis'}\n"
            f'requirepass {self.redis_password}\nsave ""\nappendonly no\n'
            "protected-mode yes\n"
        )
        conf.chmod(0o600)
        self._spawn("redis", [_need("redis-server", "redis-server"), str(conf)])
        self._wait_tcp(self.redis_port)

    def restart_redis(self) -> None:
        """Stop Redis and start it empty (no persistence in the local stack)."""
        self._signal("redis", signal.SIGKILL)
        self._wait_gone("redis", 10)
        self.start_redis()
        self.save()

    # -- workers -------------------------------------------------------------------------
    def migrate(self) -> None:
        _run([sys.executable, "-m", "chatd", "migrate"], "chatd migrate", env=self.env())

    def start_worker(self, index: int) -> None:
        bind = self.worker_bind(index)
        if bind.startswith("unix:"):
            where = ["--uds", bind[5:]]
        else:
            where = ["--host", "127.0.0.1", "--port", str(self.worker_ports[index])]
        name = f"worker-{index + 1}"
        where += ["--metrics-port", str(self.metrics_ports[index])]
        self._spawn(name, [sys.executable, "-m", "chatd", "serve", *where], env=self.env())
        self._wait_ready(index)
        self.save()

    def restart_worker(self, index: int) -> None:
        """Drain and stop one worker (SIGTERM), then start it again; nginx sends to the others meanwhile."""
        self.stop_worker(index)
        self.start_worker(index)

    def stop_worker(self, index: int, sig: signal.Signals = signal.SIGTERM, wait: float = 15) -> None:
        name = f"worker-{index + 1}"
        if name in self.pids:
            self._signal(name, sig)
            self._wait_gone(name, wait)

    def _wait_ready(self, index: int, timeout: float = 30) -> None:
        bind = self.worker_bind(index)
        transport = httpx.HTTPTransport(uds=bind[5:]) if bind.startswith("unix:") else None
        base = "http://worker" if transport else f"http://{bind}"
        deadline = time.monotonic() + timeout
        with httpx.Client(transport=transport, timeout=2) as client:
            while time.monotonic() < deadline:
                pid = self.pids[f"worker-{index + 1}"]
                if not _alive(pid):
                    log = self.root / "logs" / f"worker-{index + 1}.log"
                    tail = "\n  ".join(log.read_text(errors="replace").splitlines()[-8:])
                    raise StackError(f"worker {index + 1} exited; the end of {log}:\n  {tail}")
                try:
                    if client.get(f"{base}/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"worker {index + 1} not ready after {timeout}s")

    # -- nginx ---------------------------------------------------------------------------
    def start_nginx(self, **site_vars: object) -> None:
        """Start nginx with the production site; `site_vars` override template variables
        (the local stack is plain HTTP; tests render the TLS variant this way)."""
        listen = f"127.0.0.1:{self.http_port}" + (" reuseport" if self.nginx_reuseport else "")
        defaults: dict[str, object] = dict(
            chatd_upstreams=[self.worker_bind(i) for i in range(self.workers)],
            nginx_listen_http=[listen],
            nginx_tls=False,
            nginx_server_name="localhost",
            nginx_client_max_body_size="1m",
            nginx_auth_rate=self.nginx_auth_rate,
            nginx_auth_burst=self.nginx_auth_burst,
            nginx_ws_conn_per_addr=self.nginx_ws_conn_per_addr,
            chatd_ws_read_timeout=75,
            nginx_access_log=str(self.root / "logs" / "nginx-access.log"),
            chatd_web_root=str(web_root() or ""),
            chatd_max_upload_bytes=self.env().get("CHATD_MAX_UPLOAD_BYTES", "26214400"),
            chatd_files_cache_dir=self.env().get("CHATD_FILES_CACHE_DIR", ""),
        )
        conf = write_config(self.root, {**defaults, **site_vars}, self.nginx_worker_connections)
        binary = _need("nginx", "nginx")
        _run([binary, *conf, "-t", "-q"], "nginx -t")
        self._spawn("nginx", [binary, *conf, "-g", "daemon off;"])
        self._wait_tcp(self.http_port)

    # -- processes -----------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with (self.root / "logs" / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pids[name] = proc.pid

    def _signal(self, name: str, sig: signal.Signals) -> None:
        pid = self.pids.get(name)
        if pid and _alive(pid):
            os.kill(pid, sig)

    def _wait_gone(self, name: str, timeout: float) -> None:
        pid = self.pids.get(name)
        deadline = time.monotonic() + timeout
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pids.pop(name, None)

    def _wait_tcp(self, port: int, timeout: float = 20) -> None:
        try:
            wait_tcp(port, timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; see {self.root}/logs") from None
