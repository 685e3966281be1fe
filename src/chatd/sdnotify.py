"""systemd's service notification protocol (sd_notify(3)): READY=1, STOPPING=1, WATCHDOG=1.

One datagram per message to the unix socket named in $NOTIFY_SOCKET; without it (not started by
systemd, e.g. `chatd dev`) every call does nothing. The protocol is a stable systemd interface
and this is all of it that chatd needs, so it is written here rather than pulled in: the pure
Python package (`sdnotify`) has had no release since 2017, and `systemd-python` / `cysystemd`
need a C build against libsystemd on every host.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading "@".
        self.address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        for_us = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_s = int(watchdog_usec) / 1_000_000 if watchdog_usec.isdigit() and for_us else 0.0

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), self.address)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")
