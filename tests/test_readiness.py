"""systemd readiness and watchdog (sd_notify) from a real worker, through a real notify socket."""

from __future__ import annotations

import signal
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Worker


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET (short path: 108 bytes max)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        path = str(Path(directory) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(30)
        try:
            yield sock, path
        finally:
            sock.close()


def next_message(sock: socket.socket, wanted: str) -> list[str]:
    """Read datagrams until one holds `wanted`; returns every line seen, in order."""
    seen: list[str] = []
    while True:
        lines = sock.recv(4096).decode().splitlines()
        seen.extend(lines)
        if wanted in lines:
            return seen


def test_ready_once_serving_watchdog_fed_stopping_on_drain(
    spawn_worker: Callable[..., Worker], notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    worker = spawn_worker(wait_ready=False, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    before_ready = next_message(sock, "READY=1")
    # READY=1 means serving: the listener is up and Postgres and Redis answer at that moment.
    assert httpx.get(f"{worker.url}/readyz", timeout=5).status_code == 200
    assert "WATCHDOG=1" in before_ready  # fed from the start, not only once ready
    # The event loop keeps feeding the watchdog while it serves.
    next_message(sock, "WATCHDOG=1")
    next_message(sock, "WATCHDOG=1")
    worker.proc.send_signal(signal.SIGTERM)
    next_message(sock, "STOPPING=1")
    # uvicorn re-raises the SIGTERM it caught once it is done; systemd counts that as a clean stop.
    assert worker.proc.wait(30) in (0, -signal.SIGTERM), worker.log.read_text()


def test_a_watchdog_meant_for_another_process_is_not_fed(
    spawn_worker: Callable[..., Worker], notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    worker = spawn_worker(wait_ready=False, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000", WATCHDOG_PID="1")
    assert next_message(sock, "READY=1") == ["READY=1", "STATUS=serving"]
    worker.proc.send_signal(signal.SIGTERM)
    assert next_message(sock, "STOPPING=1") == ["STOPPING=1", "STATUS=draining"]
    assert worker.proc.wait(30) in (0, -signal.SIGTERM)
