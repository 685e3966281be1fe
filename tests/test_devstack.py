"""`chatd dev up` / `chatd dev down`: what the README tells a newcomer to run."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from chatd.processes import alive, free_port
from tests.helpers import Ws


def test_dev_up_serves_through_nginx_and_dev_down_stops_everything() -> None:
    root = Path(tempfile.mkdtemp(prefix="chatd-devtest-"))
    port = free_port()
    chatd = [sys.executable, "-m", "chatd", "dev"]
    up = subprocess.run(
        [*chatd, "up", "--dir", str(root), "--port", str(port), "--workers", "3"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    try:
        assert up.returncode == 0, up.stderr
        assert f"http://127.0.0.1:{port}" in up.stdout
        state = json.loads((root / "stack.json").read_text())
        assert sorted(state["pids"]) == ["nginx", "redis", "worker-1", "worker-2", "worker-3"]
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json() == {"status": "ready"}
        # The web app, at the URL `up` prints (issue 11).
        assert f"web app: http://127.0.0.1:{port}/" in up.stdout
        assert "<title>chatd</title>" in httpx.get(f"http://127.0.0.1:{port}/").text
        again = subprocess.run([*chatd, "up", "--dir", str(root)], capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "already running" in again.stderr
        # Registration needs an invite, as on a server (issue 20); `up` says how to make the
        # first admin, and that command works as printed.
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/v1/server").json() == {"registration": "invite"}
        hint = _hint(up.stdout, "admin")
        assert hint[-3:] == ["create-user", "alice", "--admin"], hint
        password = "correct horse battery\n"
        made = subprocess.run(hint, input=password, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0 and "created alice" in made.stdout, made.stderr
        login = httpx.post(f"{url}/v1/login", json={"username": "alice", "password": "correct horse battery"})
        me = httpx.get(f"{url}/v1/me", headers={"authorization": f"Bearer {login.json()['token']}"}).json()
        assert me["admin"] is True
    finally:
        down = subprocess.run(
            [*chatd, "down", "--dir", str(root)], capture_output=True, text=True, timeout=120
        )
    assert down.returncode == 0, down.stderr
    assert [name for name, pid in state["pids"].items() if alive(pid)] == []
    assert not (root / "pg" / "postmaster.pid").exists()
    shutil.rmtree(root, ignore_errors=True)


# -- issue 12: the local run survives a restart ------------------------------------------------

# The local run needs invites like a server (CHATD_REGISTRATION's default); these tests register
# users of their own without any.
CHEAP = {"CHATD_ARGON2_TIME_COST": "1", "CHATD_ARGON2_MEMORY_KIB": "1024", "CHATD_REGISTRATION": "open"}
CHATD_SCRIPT = str(Path(sys.executable).parent / "chatd")  # what the README runs: .venv/bin/chatd


def _dev(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATD_SCRIPT, "dev", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **CHEAP},
    )


def _hint(output: str, label: str) -> list[str]:
    """The command a `dev up` hint line prints, e.g. `  stop:  .venv/bin/chatd dev down --dir X`."""
    line = next(line for line in output.splitlines() if line.strip().startswith(f"{label}:"))
    return shlex.split(line.split(":", 1)[1])


def _chat_once(url: str, body: str) -> tuple[str, int]:
    """Register a user with a conversation holding one message; returns (token, conversation id)."""
    password = "correct horse battery"
    names = [f"dev{uuid.uuid4().hex[:10]}" for _ in range(2)]
    for name in names:
        assert (
            httpx.post(f"{url}/v1/register", json={"username": name, "password": password}).status_code == 201
        )
    login = httpx.post(f"{url}/v1/login", json={"username": names[0], "password": password}).json()
    auth = {"authorization": f"Bearer {login['token']}"}
    cid = httpx.post(f"{url}/v1/conversations/direct", json={"username": names[1]}, headers=auth).json()["id"]

    async def send() -> None:
        ws = await Ws.connect(url, login["token"])
        assert (await ws.send(cid, body))["type"] == "ack"
        await ws.close()

    asyncio.run(send())
    return login["token"], cid


def _history(url: str, token: str, cid: int) -> list[str]:
    response = httpx.get(
        f"{url}/v1/conversations/{cid}/messages", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    return [m["body"] for m in response.json()["messages"]]


def test_dev_up_after_down_brings_the_same_data_back() -> None:
    root = Path(tempfile.mkdtemp(prefix="chatd-devtest-"))
    port = free_port()
    try:
        up = _dev("up", "--dir", str(root), "--port", str(port))
        assert up.returncode == 0, up.stderr
        assert (root / "stack.json").stat().st_mode & 0o777 == 0o600
        url = f"http://127.0.0.1:{port}"
        token, cid = _chat_once(url, "kept across a restart")
        # the printed hint is a command that works as printed
        stop = _hint(up.stdout, "stop")
        assert shutil.which(stop[0]), up.stdout  # not a bare `chatd` that is not on PATH
        down = subprocess.run(stop, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr

        again = _dev("up", "--dir", str(root))  # no --port: the saved one
        assert again.returncode == 0, again.stderr
        assert "Traceback" not in again.stderr
        assert url in again.stdout
        assert _history(url, token, cid) == ["kept across a restart"]
        assert (root / "stack.json").stat().st_mode & 0o777 == 0o600
    finally:
        _dev("down", "--dir", str(root), timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def test_a_failing_child_command_shows_its_own_error() -> None:
    root = Path(tempfile.mkdtemp(prefix="chatd-devtest-"))
    try:
        assert _dev("up", "--dir", str(root), "--port", str(free_port())).returncode == 0
        assert _dev("down", "--dir", str(root), timeout=120).returncode == 0
        pg_port = json.loads((root / "stack.json").read_text())["pg_port"]
        with socket.socket() as squatter:  # someone else took Postgres's port meanwhile
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", pg_port))
            squatter.listen()
            up = _dev("up", "--dir", str(root))
        assert up.returncode == 1
        assert "Traceback" not in up.stderr and "CalledProcessError" not in up.stderr
        assert "pg_ctl" in up.stderr and "Address already in use" in up.stderr, up.stderr
    finally:
        _dev("down", "--dir", str(root), timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def _status(root: Path) -> tuple[int, dict[str, str]]:
    result = _dev("status", "--dir", str(root), timeout=60)
    rows = dict(line.split()[:2] for line in result.stdout.splitlines() if line.strip())
    return result.returncode, rows


def test_dev_status_reports_a_killed_worker_and_dev_up_brings_it_back() -> None:
    root = Path(tempfile.mkdtemp(prefix="chatd-devtest-"))
    port = free_port()
    try:
        assert _dev("up", "--dir", str(root), "--port", str(port)).returncode == 0
        code, rows = _status(root)
        assert code == 0 and set(rows.values()) == {"up"}, rows
        assert set(rows) == {"postgres", "redis", "worker-1", "worker-2", "nginx"}

        pids = json.loads((root / "stack.json").read_text())["pids"]
        os.kill(pids["worker-2"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(pids["worker-2"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        code, rows = _status(root)
        assert code == 3 and rows["worker-2"] == "down" and rows["worker-1"] == "up", rows

        repair = _dev("up", "--dir", str(root))
        assert repair.returncode == 0, repair.stderr
        code, rows = _status(root)
        assert code == 0 and set(rows.values()) == {"up"}, rows
        assert json.loads((root / "stack.json").read_text())["pids"]["worker-1"] == pids["worker-1"]

        # the documented way to restart one worker
        restart = _dev("restart", "worker-1", "--dir", str(root))
        assert restart.returncode == 0, restart.stderr
        new = json.loads((root / "stack.json").read_text())["pids"]
        assert new["worker-1"] != pids["worker-1"] and not alive(pids["worker-1"])
        code, rows = _status(root)
        assert code == 0 and set(rows.values()) == {"up"}, rows
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        _dev("down", "--dir", str(root), timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def test_bootstrap_waits_for_the_dpkg_lock() -> None:
    script = (Path(__file__).parent.parent / "scripts" / "bootstrap").read_text()
    apt_calls = [line for line in script.splitlines() if line.strip().startswith(("apt-get", "DEBIAN_"))]
    assert apt_calls and all("lock[@]" in line for line in apt_calls), apt_calls
    assert 'DPkg::Lock::Timeout="$wait_s"' in script
