"""`chatd admin`: run on the server host, as the service user with the workers' settings and
credentials (docs/operations.md "Accounts and admins"), e.g. to make the first admin."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import logging.handlers
import sys
from pathlib import Path

from chatd import logs
from chatd.config import Settings, settings_or_exit


def _new_password(username: str) -> str:
    """From a prompt (asked twice) on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {username}: ")
        if first != getpass.getpass("the same again: "):
            raise SystemExit("chatd: the two passwords differ; nothing was created")
        return first
    return sys.stdin.readline().removesuffix("\n").removesuffix("\r")


async def _create_user(
    settings: Settings, username: str, password: str, admin: bool, by: str
) -> dict[str, object]:
    from chatd import accounts, migrations
    from chatd.admin import audit
    from chatd.security import Passwords
    from chatd.storage import Stores, create_pool

    pool = await create_pool(settings.database_url, 1, 1)
    passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib)
    try:
        async with pool.acquire() as conn:
            if missing := await migrations.missing(conn):
                raise SystemExit(
                    f"chatd: the database schema is behind ({', '.join(missing)}); run `chatd migrate`"
                )
        user = await accounts.create_account(Stores(pool), passwords, username, password, admin)
    finally:
        passwords.close()
        await pool.close()
    audit({"actor_id": None, "actor": f"host:{by}"}, "create_user", user, admin=admin)
    return user


def cmd_admin(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    logs.setup(settings.log_level)
    if args.journal and Path("/dev/log").exists():
        # The audit line goes to the journal too (SYSLOG_IDENTIFIER chatd-admin), not only to
        # the operator's terminal.
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.ident = "chatd-admin: "
        handler.setFormatter(logs.JsonFormatter())
        logging.getLogger("chatd.admin").addHandler(handler)
    from chatd.errors import ChatdError

    password = _new_password(args.username)
    try:
        by = args.by or getpass.getuser()
        user = asyncio.run(_create_user(settings, args.username, password, args.admin, by))
    except ChatdError as exc:
        print(f"chatd: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError) as exc:
        print(f"chatd: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    role = "an admin" if args.admin else "a user"
    print(f"created {user['username']} (user {user['user_id']}), {role}; they can log in now")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = sub.add_parser("admin", help="create users on the server host (the first admin)")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_sub.add_parser(
        "create-user", help="create a user; the password is asked for, or read from stdin (one line)"
    )
    create.add_argument("username")
    create.add_argument("--admin", action="store_true", help="make them an admin")
    create.add_argument("--by", help="who ran it, for the audit line (default: this process's user)")
    create.add_argument("--journal", action="store_true", help="send the audit line to the journal too")
    create.set_defaults(func=cmd_admin)
