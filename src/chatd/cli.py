"""The `chatd` command: serve, migrate, check-config, client, dev."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from chatd import __version__, logs
from chatd.config import ConfigError, Settings, documented_defaults


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings()
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
    settings = _settings()
    logs.setup(settings.log_level)
    from chatd import migrations

    try:
        applied = asyncio.run(migrations.migrate(settings.database_url))
    except (OSError, ConnectionError) as exc:
        print(f"chatd: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("chatd.migrate").info(
        "migrations applied" if applied else "schema is current", extra={"applied": applied}
    )
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings()
    if args.list:
        for name, default in documented_defaults().items():
            print(f"{name}={'(required)' if default is None else default}")
        return 0
    print(f"chatd: configuration ok (log level {settings.log_level})")
    return 0


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

    from chatd import client, devstack

    client.add_parser(sub)
    devstack.add_parser(sub)
    return top


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    raise SystemExit(args.func(args))
