"""Start and stop the peers' processes, and an nginx in front of them like chatd's."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from chatd.processes import free_port, wait_tcp

NGINX_CONF = """\
{user}worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 19500; }}
http {{
  access_log off;
  client_body_temp_path {root}/tmp/body; proxy_temp_path {root}/tmp/proxy;
  fastcgi_temp_path {root}/tmp/fastcgi; uwsgi_temp_path {root}/tmp/uwsgi; scgi_temp_path {root}/tmp/scgi;
  map $http_upgrade $upgrade_to {{ default upgrade; '' ''; }}
  upstream peer {{
    least_conn;
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port} reuseport;
    location / {{
      proxy_pass http://peer;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $upgrade_to;
      proxy_set_header Host $host;
      proxy_read_timeout 75s;
      proxy_send_timeout 75s;
      proxy_buffering off;
    }}
  }}
}}
"""


class Procs:
    """Processes this run started (each in its own session), stopped by pid only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        self.pids: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        with (self.root / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs[name] = proc
        self.pids[name] = proc.pid
        return proc.pid

    def alive(self, name: str) -> bool:
        return self._procs[name].poll() is None

    def log_tail(self, name: str, lines: int = 5) -> str:
        path = self.root / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self._procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def nginx(self, upstreams: list[str]) -> int:
        """nginx on 127.0.0.1:<free port> proxying WebSockets to `upstreams`; returns the port."""
        port = free_port()
        root = self.root / "nginx"
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        (root / "tmp").chmod(0o777)
        user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
        servers = "\n".join(f"    server {u} max_fails=0;" for u in upstreams)
        conf = root / "nginx.conf"
        conf.write_text(NGINX_CONF.format(user=user, root=root, servers=servers, port=port))
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.spawn(
            "nginx",
            [binary, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log"), "-g", "daemon off;"],
        )
        wait_tcp(port)
        return port


def wait_path(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not appear")
