"""The dev stack's PostgreSQL: one cluster in a directory, owned by the postgres user when run
as root (initdb refuses root), listening on loopback only."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from chatd.processes import pg_bin, run


def as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def init(data: Path, port: int, password: str) -> None:
    """A new cluster with the role `chatd` (scram, `password`); nothing if there is one."""
    if (data / "PG_VERSION").exists():
        return
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    data.mkdir(exist_ok=True)
    pwfile = data.parent / "pg.pw"
    pwfile.write_text(password + "\n")
    if owner:
        os.chown(data, owner.pw_uid, owner.pw_gid)
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    initdb = [pg_bin("initdb"), "-D", str(data), "-U", "chatd", "--auth=scram-sha-256"]
    run(as_postgres([*initdb, f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"]), "initdb")
    pwfile.unlink()
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
            f"unix_socket_directories = '{data}'\nmax_connections = 300\n"
            "shared_buffers = 256MB\nfsync = on\nsynchronous_commit = on\n"
        )


def start(data: Path) -> None:
    log = data / "server.log"
    argv = [pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"]
    run(as_postgres(argv), "pg_ctl start (PostgreSQL)", log=log)


def stop(data: Path, mode: str) -> None:
    if (data / "postmaster.pid").exists():
        subprocess.run(
            as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
        )


def create_database(port: int, password: str, name: str = "chatd") -> None:
    """CREATE DATABASE unless it exists."""
    env = {**os.environ, "PGPASSWORD": password}
    psql = ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "chatd", "-d", "postgres", "-tAc"]
    if not run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"], "psql", env=env).strip():
        run([*psql, f"CREATE DATABASE {name}"], "psql CREATE DATABASE", env=env)
