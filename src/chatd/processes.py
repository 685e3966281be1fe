"""Small process and port helpers for the local stack and the tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie that is not our child still answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wait_tcp(port: int, timeout: float = 20, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port}")


class StackError(Exception):
    """A child command failed; the message carries its own error output."""


def run(argv: list[str], what: str, env: dict[str, str] | None = None, log: Path | None = None) -> str:
    """Run a child command; on failure raise StackError with what it printed (and its log's tail)."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return done.stdout
    said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-15:]
    if log is not None and log.exists():
        said += [f"--- last lines of {log}:", *log.read_text(errors="replace").splitlines()[-8:]]
    raise StackError(f"{what} failed (exit {done.returncode}):\n  " + "\n  ".join(said))


def pg_bin(name: str) -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: p.parts[-3])
    found = str(versions[-1]) if versions else shutil.which(name)
    if not found:
        raise SystemExit(f"chatd: {name} not found; install postgresql (see README)")
    return found


def need(binary: str, package: str) -> str:
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if not found:
        raise SystemExit(f"chatd: {binary} not found; install {package} (see README)")
    return found
