"""`chatd dev up` / `chatd dev down`: what the README tells a newcomer to run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from chatd.processes import alive, free_port


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
        again = subprocess.run([*chatd, "up", "--dir", str(root)], capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = subprocess.run(
            [*chatd, "down", "--dir", str(root)], capture_output=True, text=True, timeout=120
        )
    assert down.returncode == 0, down.stderr
    assert [name for name, pid in state["pids"].items() if alive(pid)] == []
    assert not (root / "pg" / "postmaster.pid").exists()
    shutil.rmtree(root, ignore_errors=True)
