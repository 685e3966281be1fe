"""The `chatd` command: serve, migrate, check-config, client, dev."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chatd import __version__, admin_cli, logs
from chatd.config import documented_defaults, settings_or_exit

if TYPE_CHECKING:
    from chatd import devstack

Command = Callable[[argparse.Namespace], int]
# The daemon's wheel installs neither: `chatd client` and `chatd dev` need their extra.
EXTRAS = {"client": ("httpx", "websockets", "prompt_toolkit"), "dev": ("httpx", "jinja2")}
EXTRA_NAMES = {"client": "client", "dev": "devstack"}


def program() -> str:
    """`chatd` as the user ran it, for hints that must work when pasted (`.venv/bin/chatd`)."""
    argv0 = sys.argv[0]
    if Path(argv0).name in ("__main__.py", "-c") or not argv0:
        return f"{shlex.quote(sys.executable)} -m chatd"
    if os.sep not in argv0:
        return argv0  # found on PATH
    on_path = shutil.which(Path(argv0).name)
    if on_path and Path(on_path).resolve() == Path(argv0).resolve():
        return Path(argv0).name
    return shlex.quote(argv0)


def needs_extra(command: str, exc: ImportError) -> int:
    """`chatd client` or `chatd dev` without its extra: one line saying how to install it."""
    if exc.name is None or exc.name.partition(".")[0] not in EXTRAS[command]:
        raise exc
    extra = EXTRA_NAMES[command]
    print(
        f"chatd: `chatd {command}` needs the {extra} extra ({exc.name} is not installed): "
        f"pip install 'chatd[{extra}]'",
        file=sys.stderr,
    )
    return 2


def _with_devstack(func: Command) -> Command:
    def run(args: argparse.Namespace) -> int:
        try:
            from chatd import devstack  # noqa: F401  (httpx, jinja2)
        except ImportError as exc:
            return needs_extra("dev", exc)
        return func(args)

    return run


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    logs.setup(settings.log_level)
    import asyncpg
    import redis.exceptions

    from chatd.app import SchemaOutdated
    from chatd.server import serve

    try:
        serve(
            settings,
            uds=args.uds,
            host=args.host,
            port=args.port,
            metrics_host=args.metrics_host,
            metrics_port=args.metrics_port,
        )
    except SchemaOutdated as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 3
    except (OSError, ConnectionError, redis.exceptions.RedisError, asyncpg.PostgresError) as exc:
        print(f"chatd: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    logs.setup(settings.log_level)
    from chatd import migrations

    try:
        applied = asyncio.run(migrations.migrate(settings.database_url, settings.search_language))
    except (OSError, ConnectionError) as exc:
        print(f"chatd: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("chatd.migrate").info(
        "migrations applied" if applied else "schema is current", extra={"applied": applied}
    )
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    if args.list:
        for name, default in documented_defaults().items():
            print(f"{name}={'(required)' if default is None else default}")
        return 0
    print(f"chatd: configuration ok (log level {settings.log_level})")
    return 0


# -- chatd dev: the local stack (src/chatd/devstack.py) -------------------------------------


def _prog(args: argparse.Namespace, rest: str) -> str:
    """A command to print in a hint, spelled so that it works when pasted (`.venv/bin/chatd ...`)."""
    where = "" if args.dir == DEFAULT_DIR else f" --dir {args.dir}"
    return f"{program()} dev {rest}{where}"


def _open(root: Path) -> devstack.Stack | None:
    from chatd import devstack

    if (root / devstack.STATE).exists():
        return devstack.Stack.load(root)
    if (root / "pg" / "PG_VERSION").exists():
        raise devstack.StackError(
            f"{root}/pg holds a database but {root}/{devstack.STATE} (its ports and passwords) is gone; "
            f"move {root} away to start afresh"
        )
    return None


def cmd_up(args: argparse.Namespace) -> int:
    from chatd import devstack

    root = Path(args.dir).resolve()
    try:
        stack = _open(root)
    except devstack.StackError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 1
    before = stack.status() if stack else {}
    if stack is None:
        stack = devstack.Stack(root=root, workers=args.workers or 2, http_port=args.port or 8080)
    elif all(before.values()):
        print(
            f"chatd: a stack is already running in {root} ({stack.url}); see `{_prog(args, 'status')}`",
            file=sys.stderr,
        )
        return 1
    elif any(before.values()) and (args.port or stack.http_port, args.workers or stack.workers) != (
        stack.http_port,
        stack.workers,
    ):
        down = _prog(args, "down")
        print(
            f"chatd: part of the stack is running; `{down}` first to change --port or --workers",
            file=sys.stderr,
        )
        return 1
    else:
        stack.http_port, stack.workers = args.port or stack.http_port, args.workers or stack.workers
    try:
        stack.up()
    except (devstack.StackError, RuntimeError) as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        if not any(before.values()):
            stack.down()
        print(f"chatd: logs in {root / 'logs'}; state: `{_prog(args, 'status')}`", file=sys.stderr)
        return 1
    started = [name for name, was_up in before.items() if not was_up]
    if any(before.values()):
        print(f"chatd: repaired: started {', '.join(started)}")
    print(f"chatd is up: {stack.url}  (WebSocket: ws://127.0.0.1:{stack.http_port}/v1/ws)")
    print(
        f"  {stack.workers} workers, Postgres :{stack.pg_port}, Redis :{stack.redis_port}; "
        f"logs in {root / 'logs'}"
    )
    if devstack.web_root() is not None:
        print(f"  web app: {stack.url}/  (open it in a browser)")
    url = "" if stack.http_port == 8080 else f" --url {stack.url}"
    where = "" if args.dir == DEFAULT_DIR else f" --dir {args.dir}"
    # Registration needs an invite here too (CHATD_REGISTRATION): the first admin is made
    # on the host, as on a server, then makes invites or users in the web app.
    print(f"  admin:   {program()} dev admin{where} create-user alice --admin")
    print(f"  chat:    {program()} client{url} login alice")
    print(f"  status:  {_prog(args, 'status')}")
    print(f"  stop:    {_prog(args, 'down')}")
    return 0


def _existing_stack(args: argparse.Namespace) -> devstack.Stack | None:
    """The stack `--dir` holds, or None (said on stderr) when it holds none."""
    from chatd import devstack

    root = Path(args.dir).resolve()
    if not (root / devstack.STATE).exists():
        print(f"chatd: no stack in {root}", file=sys.stderr)
        return None
    return devstack.Stack.load(root)


def cmd_down(args: argparse.Namespace) -> int:
    stack = _existing_stack(args)
    if stack is None:
        return 1
    stack.down()
    print(f"chatd: stopped; the data stays in {stack.root}, `{_prog(args, 'up')}` brings it back")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when everything runs, 3 (as `systemctl status`) when something is down."""
    stack = _existing_stack(args)
    if stack is None:
        return 3
    root = stack.root
    status = stack.status()
    for name, up in status.items():
        pid: object = stack.pids.get(name, "")
        if name == "postgres" and up:
            pid = (root / "pg" / "postmaster.pid").read_text().split("\n", 1)[0]
        print(f"{name:10} {'up' if up else 'down':5} {pid if up else ''}".rstrip())
    if not all(status.values()):
        print(f"start what is down: {_prog(args, 'up')}", file=sys.stderr)
        return 3
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    from chatd import devstack

    stack = _existing_stack(args)
    if stack is None:
        return 1
    name = args.process
    if not name.startswith("worker-") or name.removeprefix("worker-") not in {
        str(i + 1) for i in range(stack.workers)
    }:
        print(f"chatd: {name}: expected worker-1 .. worker-{stack.workers}", file=sys.stderr)
        return 2
    try:
        stack.restart_worker(int(name.removeprefix("worker-")) - 1)
    except (devstack.StackError, RuntimeError) as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 1
    print(f"chatd: restarted {name} (pid {stack.pids[name]})")
    return 0


def cmd_dev_admin(args: argparse.Namespace) -> int:
    """`chatd admin ...` against the local stack's database (its settings, its passwords)."""
    stack = _existing_stack(args)
    if stack is None:
        return 1
    argv = [sys.executable, "-m", "chatd", "admin", *args.rest]
    return subprocess.run(argv, env=stack.env(), check=False).returncode


DEFAULT_DIR = ".chatd-dev"


def add_dev_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("dev", help="run a private local stack (Postgres, Redis, workers, nginx)")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_sub.add_parser("up", help="start the stack (or what of it is down) and print its URL")
    up.add_argument("--workers", type=int, help="default 2, or what the stack had")
    up.add_argument("--port", type=int, help="nginx port on 127.0.0.1; default 8080, or what the stack had")
    up.set_defaults(func=_with_devstack(cmd_up))
    down = dev_sub.add_parser("down", help="stop the stack; its data stays")
    down.set_defaults(func=_with_devstack(cmd_down))
    status = dev_sub.add_parser("status", help="each process, up or down")
    status.set_defaults(func=_with_devstack(cmd_status))
    restart = dev_sub.add_parser("restart", help="drain and restart one worker")
    restart.add_argument("process", help="worker-1, worker-2, ...")
    restart.set_defaults(func=_with_devstack(cmd_restart))
    admin = dev_sub.add_parser(
        "admin", help="`chatd admin ...` for the local stack, e.g. create-user NAME --admin"
    )
    admin.set_defaults(func=_with_devstack(cmd_dev_admin))
    for cmd in (up, down, status, restart, admin):
        cmd.add_argument("--dir", default=DEFAULT_DIR, help=f"where the stack lives (default {DEFAULT_DIR})")
    admin.add_argument("rest", nargs=argparse.REMAINDER, help="create-user NAME [--admin]")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="chatd", description=__doc__)
    top.add_argument("--version", action="version", version=f"chatd {__version__}")
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one worker process")
    serve.add_argument("--uds", help="listen on this unix socket")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8001)
    serve.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address for /metrics: loopback or a private address, never a public one",
    )
    serve.add_argument(
        "--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port (0: not served)"
    )
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=cmd_migrate)

    check = sub.add_parser("check-config", help="validate CHATD_* settings")
    check.add_argument("--list", action="store_true", help="list every setting and its default")
    check.set_defaults(func=cmd_check_config)

    try:
        from chatd import client
    except ImportError as exc:  # without the client extra: `chatd client ...` says how to get it
        missing = exc
        stub = sub.add_parser("client", help="a terminal chat client (the client extra)")
        stub.add_argument("--url")
        stub.add_argument("--user")
        stub.add_argument("rest", nargs=argparse.REMAINDER)
        stub.set_defaults(func=lambda _args: needs_extra("client", missing))
    else:
        client.add_parser(sub)
    admin_cli.add_parser(sub)
    add_dev_parser(sub)
    return top


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    raise SystemExit(args.func(args))
