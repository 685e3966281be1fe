"""A hot standby of the test session's Postgres (pg_basebackup -R, streaming), for the tests of
host lists (test_database_hosts.py) and of replica reads (test_replica_reads.py)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chatd.devstack import Stack
from chatd.processes import free_port, pg_bin


@dataclass
class Standby:
    port: int
    _pg_ctl: list[str]

    def stop(self) -> None:
        subprocess.run(
            [*self._pg_ctl, "-m", "immediate", "stop"], check=False, capture_output=True, timeout=60
        )

    def start(self) -> None:
        subprocess.run([*self._pg_ctl, "start"], check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def run_standby(stack: Stack) -> Iterator[Standby]:
    """Start a standby of the session's Postgres on a port of 127.0.0.1."""
    root = Path(tempfile.mkdtemp(prefix="chatd-standby-"))
    data, port = root / "data", free_port()
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    env = {**os.environ, "PGPASSWORD": stack.db_password}
    subprocess.run(
        [*as_postgres, pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(stack.pg_port),
         "-U", "chatd", "-D", str(data), "-R", "-X", "stream", "-c", "fast"],
        env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c hot_standby=on"
    standby = Standby(
        port, [*as_postgres, pg_bin("pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options, "-w"]
    )
    standby.start()
    try:
        yield standby
    finally:
        standby.stop()
        shutil.rmtree(root, ignore_errors=True)
