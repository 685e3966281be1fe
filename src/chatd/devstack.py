"""A private stack on loopback: PostgreSQL, Redis, N chatd workers and nginx in one directory.

`chatd dev up` runs it for people; the test suite runs the same code in a temporary directory.
nginx uses the production site template (nginx/chatd.conf.j2).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import jinja2

from chatd.processes import alive as _alive
from chatd.processes import free_port as free_port  # re-exported for bench/ and older callers
from chatd.processes import wait_tcp

STATE = "stack.json"


def _pg_bin(name: str) -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: p.parts[-3])
    found = str(versions[-1]) if versions else shutil.which(name)
    if not found:
        raise SystemExit(f"chatd: {name} not found; install postgresql (see README)")
    return found


def _need(binary: str, package: str) -> str:
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if not found:
        raise SystemExit(f"chatd: {binary} not found; install {package} (see README)")
    return found


def nginx_template() -> jinja2.Template:
    here = Path(__file__).resolve().parent
    for directory in (here / "nginx", here.parent.parent / "nginx"):
        if (directory / "chatd.conf.j2").exists():
            env = jinja2.Environment(loader=jinja2.FileSystemLoader(directory), autoescape=False)  # noqa: S701
            return env.get_template("chatd.conf.j2")
    raise FileNotFoundError("nginx/chatd.conf.j2 not found")


def web_root() -> Path | None:
    """The web app's files (web/app in a checkout), served by nginx at `/`."""
    found = Path(__file__).resolve().parent.parent.parent / "web" / "app"
    return found if (found / "index.html").exists() else None


@dataclass
class Stack:
    root: Path
    workers: int = 2
    tcp_workers: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    nginx_worker_connections: int = 10000  # per nginx worker; a proxied WebSocket takes two
    nginx_reuseport: bool = False  # one listening socket per worker: the kernel spreads connections
    pg_port: int = 0
    redis_port: int = 0
    http_port: int = 0
    worker_ports: list[int] = field(default_factory=list)
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
        return f"redis://:{self.redis_password}@127.0.0.1:{self.redis_port}/0"

    def worker_bind(self, index: int) -> str:
        if self.tcp_workers:
            return f"127.0.0.1:{self.worker_ports[index]}"
        return f"unix:{self.root / 'run' / f'chatd-{index + 1}.sock'}"

    def worker_url(self, index: int) -> str:
        """Direct URL of one worker (TCP workers only), bypassing nginx."""
        return f"http://127.0.0.1:{self.worker_ports[index]}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CHATD_DATABASE_URL": self.database_url,
            "CHATD_REDIS_URL": self.redis_url,
            **self.extra_env,
        }

    def save(self) -> None:
        state = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        (self.root / STATE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, root: Path) -> Stack:
        state = json.loads((root / STATE).read_text())
        state["root"] = Path(state["root"])
        return cls(**state)

    # -- lifecycle -----------------------------------------------------------------------
    def up(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # nginx's and postgres's users must traverse it
        for sub in ("logs", "run", "redis", "nginx/tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "run").chmod(0o755)
        (self.root / "nginx/tmp").chmod(0o777)
        self.pg_port = self.pg_port or free_port()
        self.redis_port = self.redis_port or free_port()
        self.http_port = self.http_port or free_port()
        if self.tcp_workers and not self.worker_ports:
            self.worker_ports = [free_port() for _ in range(self.workers)]
        self.db_password = self.db_password or secrets.token_urlsafe(18)
        self.redis_password = self.redis_password or secrets.token_urlsafe(18)
        self.save()
        self.start_postgres(init=True)
        self.start_redis()
        self.migrate()
        for index in range(self.workers):
            self.start_worker(index)
        self.start_nginx()
        self.save()

    def down(self) -> None:
        for name in sorted(self.pids, reverse=True):
            if name.startswith("worker-"):
                self.stop_worker(int(name.removeprefix("worker-")) - 1)
        if "nginx" in self.pids:
            self._signal("nginx", signal.SIGQUIT)
            self._wait_gone("nginx", 10)
        if "redis" in self.pids:
            self._signal("redis", signal.SIGTERM)
            self._wait_gone("redis", 10)
        self.stop_postgres()
        self.save()

    # -- postgres ------------------------------------------------------------------------
    def _as_postgres(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", "postgres", "--", *argv]

    def start_postgres(self, init: bool = False) -> None:
        data = self.root / "pg"
        owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if init and not (data / "PG_VERSION").exists():
            data.mkdir(exist_ok=True)
            pwfile = self.root / "pg.pw"
            pwfile.write_text(self.db_password + "\n")
            if owner:
                os.chown(data, owner.pw_uid, owner.pw_gid)
                os.chown(pwfile, owner.pw_uid, owner.pw_gid)
            subprocess.run(
                self._as_postgres(
                    [
                        _pg_bin("initdb"),
                        "-D",
                        str(data),
                        "-U",
                        "chatd",
                        "--auth=scram-sha-256",
                        f"--pwfile={pwfile}",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
            pwfile.unlink()
            with (data / "postgresql.conf").open("a") as conf:
                conf.write(
                    f"\nlisten_addresses = '127.0.0.1'\nport = {self.pg_port}\n"
                    f"unix_socket_directories = '{data}'\nmax_connections = 300\n"
                    "shared_buffers = 256MB\nfsync = on\nsynchronous_commit = on\n"
                )
        log = str(data / "server.log")
        start = [_pg_bin("pg_ctl"), "-D", str(data), "-l", log, "-w", "-t", "60", "start"]
        subprocess.run(self._as_postgres(start), check=True, stdout=subprocess.DEVNULL)
        if init:
            self._psql("SELECT 1 FROM pg_database WHERE datname = 'chatd'", create=True)

    def _psql(self, sql: str, create: bool = False) -> None:
        env = {**os.environ, "PGPASSWORD": self.db_password}
        base = ["psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "chatd", "-d", "postgres", "-tAc"]
        out = subprocess.run([*base, sql], env=env, check=True, capture_output=True, text=True)
        if create and not out.stdout.strip():
            subprocess.run([*base, "CREATE DATABASE chatd"], env=env, check=True, capture_output=True)

    def stop_postgres(self, mode: str = "fast") -> None:
        data = self.root / "pg"
        if (data / "postmaster.pid").exists():
            subprocess.run(
                self._as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"]),
                check=False,
                stdout=subprocess.DEVNULL,
            )

    def restart_postgres(self, mode: str = "immediate") -> None:
        """Stop (by default like a crash: no checkpoint) and start again."""
        self.stop_postgres(mode)
        self.start_postgres()

    # -- redis ---------------------------------------------------------------------------
    def start_redis(self) -> None:
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
        subprocess.run(
            [sys.executable, "-m", "chatd", "migrate"], env=self.env(), check=True, stdout=subprocess.DEVNULL
        )

    def start_worker(self, index: int) -> None:
        bind = self.worker_bind(index)
        if bind.startswith("unix:"):
            where = ["--uds", bind[5:]]
        else:
            where = ["--host", "127.0.0.1", "--port", str(self.worker_ports[index])]
        name = f"worker-{index + 1}"
        self._spawn(name, [sys.executable, "-m", "chatd", "serve", *where], env=self.env())
        self._wait_ready(index)
        self.save()

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
                    raise RuntimeError(f"worker {index + 1} exited; see {self.root}/logs")
                try:
                    if client.get(f"{base}/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"worker {index + 1} not ready after {timeout}s")

    # -- nginx ---------------------------------------------------------------------------
    def start_nginx(self) -> None:
        listen = f"127.0.0.1:{self.http_port}" + (" reuseport" if self.nginx_reuseport else "")
        site = nginx_template().render(
            chatd_upstreams=[self.worker_bind(i) for i in range(self.workers)],
            nginx_listen_http=[listen],
            nginx_tls=False,
            nginx_server_name="localhost",
            nginx_client_max_body_size="1m",
            chatd_ws_read_timeout=75,
            nginx_access_log=str(self.root / "logs" / "nginx-access.log"),
            chatd_web_root=str(web_root() or ""),
        )
        nginx = self.root / "nginx"
        (nginx / "chatd.conf").write_text(site)
        tmp = nginx / "tmp"
        user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
        (nginx / "nginx.conf").write_text(
            f"{user}worker_processes 2;\npid {nginx / 'nginx.pid'};\n"
            f"error_log {self.root / 'logs' / 'nginx-error.log'} warn;\n"
            f"worker_rlimit_nofile 20000;\nevents {{ worker_connections {self.nginx_worker_connections}; }}\n"
            "http {\n"
            f"  client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n"
            f"  fastcgi_temp_path {tmp}/fastcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n"
            f"  scgi_temp_path {tmp}/scgi;\n  include {nginx / 'chatd.conf'};\n}}\n"
        )
        binary = _need("nginx", "nginx")
        conf = [
            "-p",
            str(nginx),
            "-c",
            str(nginx / "nginx.conf"),
            "-e",
            str(self.root / "logs" / "nginx-error.log"),
        ]
        subprocess.run([binary, *conf, "-t", "-q"], check=True)
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


def cmd_up(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    if (root / STATE).exists() and any(_alive(p) for p in Stack.load(root).pids.values()):
        print(f"chatd: a stack is already running in {root}; `chatd dev down` first", file=sys.stderr)
        return 1
    stack = Stack(root=root, workers=args.workers, http_port=args.port)
    try:
        stack.up()
    except BaseException:
        stack.down()
        raise
    print(f"chatd is up: {stack.url}  (WebSocket: ws://127.0.0.1:{stack.http_port}/v1/ws)")
    print(
        f"  {stack.workers} workers, Postgres :{stack.pg_port}, Redis :{stack.redis_port}; "
        f"logs in {root / 'logs'}"
    )
    if web_root() is not None:
        print(f"  web app: open {stack.url}/ in a browser")
    print(f"  chat:  chatd client --url {stack.url} register alice")
    print(f"  stop:  chatd dev down --dir {args.dir}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    if not (root / STATE).exists():
        print(f"chatd: no stack in {root}", file=sys.stderr)
        return 1
    Stack.load(root).down()
    print("chatd: stopped")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("dev", help="run a private local stack (Postgres, Redis, workers, nginx)")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_sub.add_parser("up", help="start the stack and print its URL")
    up.add_argument("--dir", default=".chatd-dev")
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--port", type=int, default=8080, help="nginx port on 127.0.0.1")
    up.set_defaults(func=cmd_up)
    down = dev_sub.add_parser("down", help="stop the stack")
    down.add_argument("--dir", default=".chatd-dev")
    down.set_defaults(func=cmd_down)
