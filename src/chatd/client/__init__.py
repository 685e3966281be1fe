"""The terminal client: `chatd client register|login|logout|passwd|devices|list|chat|group|watch` (README)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from chatd.client import profiles
from chatd.client.api import Api, ApiError
from chatd.client.lines import clock
from chatd.client.session import ChatSession, Stop

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _program() -> str:
    from chatd.cli import program

    return program()


def _hint(args: argparse.Namespace, rest: str) -> str:
    user = f" --user {args.user}" if args.user else ""
    url = "" if args.url == DEFAULT_URL else f" --url {args.url}"
    return f"{_program()} client{url}{user} {rest}"


DEFAULT_URL = "http://127.0.0.1:8080"


def _profile(args: argparse.Namespace) -> profiles.Profile:
    try:
        return profiles.find(args.url, args.user)
    except profiles.ProfileError as exc:
        if exc.args[0].startswith("several"):
            raise SystemExit(f"chatd: {exc}") from None
        url = "" if args.url == DEFAULT_URL else f" --url {args.url}"
        raise SystemExit(f"chatd: {exc}; log in with `{_program()} client{url} login NAME`") from None


def _password(args: argparse.Namespace) -> str:
    return args.password or os.environ.get("CHATD_PASSWORD") or getpass.getpass("password: ")


def _invite(args: argparse.Namespace, policy: str) -> str | None:
    """The invite, when the server says registering needs one (GET /v1/server)."""
    if policy == "closed":
        raise SystemExit("chatd: registration is closed on this server; an admin creates accounts")
    if policy != "invite":
        return None
    given = args.invite or os.environ.get("CHATD_INVITE")
    if given:
        return str(given)
    if not sys.stdin.isatty():
        raise SystemExit("chatd: registering on this server needs an invite: --invite TOKEN (ask an admin)")
    return input("invite (from an admin): ").strip()


async def cmd_register(args: argparse.Namespace) -> int:
    async with Api(args.url) as api:
        body = {"username": args.username}
        invite = _invite(args, (await api.call("GET", "/v1/server"))["registration"])
        if invite is not None:
            body["invite"] = invite
        body["password"] = _password(args)
        try:
            user = await api.call("POST", "/v1/register", body)
        except ApiError as exc:
            if exc.code in ("invite_required", "invalid_invite", "registration_closed"):
                print(f"chatd: {exc}; ask an admin for an invite", file=sys.stderr)
                return 1
            if exc.code == "username_taken":
                print(
                    f"chatd: {args.username} is already registered; log in: "
                    f"{_hint(args, 'login ' + args.username)}",
                    file=sys.stderr,
                )
                return 1
            raise
    login = _hint(args, "login " + user["username"])
    print(f"registered {user['username']} (user {user['user_id']}); now: {login}")
    return 0


async def cmd_login(args: argparse.Namespace) -> int:
    async with Api(args.url) as api:
        body = {"username": args.username, "password": _password(args)}
        result = await api.call("POST", "/v1/login", body)
    old: profiles.Profile = {}
    with contextlib.suppress(profiles.ProfileError):
        old = profiles.find(args.url, result["username"])
    profiles.save(
        {
            "url": args.url,
            **{k: result[k] for k in ("username", "user_id", "token")},
            "outbox": old.get("outbox", {}),
        }
    )
    print(f"logged in as {result['username']} (profile {result['username']} @ {args.url})")
    return 0


async def cmd_logout(args: argparse.Namespace) -> int:
    profile = _profile(args)
    async with Api(args.url, profile["token"]) as api:
        try:
            await api.call("POST", "/v1/logout")
        except ApiError as exc:
            if exc.code != "unauthorized":
                raise
    profiles.remove(args.url, profile["username"])
    print(f"logged out {profile['username']}")
    return 0


def _new_password(args: argparse.Namespace) -> str:
    given = args.new_password or os.environ.get("CHATD_NEW_PASSWORD")
    if given:
        return str(given)
    first = getpass.getpass("new password: ")
    if first != getpass.getpass("the same again: "):
        raise SystemExit("chatd: the two passwords differ; nothing changed")
    return first


async def cmd_passwd(args: argparse.Namespace) -> int:
    """Change the password; every other login of this user (other devices) is logged out."""
    profile = _profile(args)
    current = args.password or os.environ.get("CHATD_PASSWORD") or getpass.getpass("current password: ")
    body = {"current_password": current, "new_password": _new_password(args)}
    async with Api(args.url, profile["token"]) as api:
        result = await api.call("PUT", "/v1/me/password", body)
    others = result["revoked_sessions"]
    print(f"password changed; {others} other device(s) logged out")
    return 0


async def cmd_devices(args: argparse.Namespace) -> int:
    """The user's logins (devices), or `devices revoke ID` to log one out."""
    profile = _profile(args)
    async with Api(args.url, profile["token"]) as api:
        if args.revoke is not None:
            await api.call("DELETE", f"/v1/me/sessions/{args.revoke}")
            print(f"device {args.revoke} logged out")
            return 0
        sessions = (await api.call("GET", "/v1/me/sessions"))["sessions"]
    header = ("id", "logged in", "last used", "address", "device")
    rows = [
        (
            str(s["id"]) + (" *" if s["current"] else ""),
            s["created_at"][:16].replace("T", " "),
            s["last_used_at"][:16].replace("T", " "),
            s["address"] or "-",
            s["user_agent"] or "-",
        )
        for s in sessions
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"* this one; log one out: {_hint(args, 'devices --revoke ID')}")
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    profile = _profile(args)
    ready = await _ready(args.url, profile["token"])
    async with Api(args.url, profile["token"]) as api:
        rows = []
        for conv in ready["conversations"]:
            if conv["kind"] == "group":
                name = f"{conv['title']} ({conv['member_count']} members)"
            else:
                names = await api.members(conv["id"])
                name = ", ".join(n for uid, n in names.items() if uid != profile["user_id"])
            last = await api.history(conv["id"], limit=1)
            when = clock(last[-1]["created_at"]) if last else "-"
            rows.append((f"#{conv['id']}", conv["kind"], name, str(conv["unread"]), when))
    if not rows:
        print(f"no conversations yet; start one: {_hint(args, 'chat USERNAME')}")
        return 0
    header = ("id", "kind", "with", "unread", "last activity")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _ready(url: str, token: str) -> dict[str, Any]:
    """The `ready` frame, with the conversations of the `conversations` pages after it."""
    import orjson
    import websockets

    async with websockets.connect(url.replace("http", "ws", 1) + "/v1/ws", max_size=2**20) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        frame: dict[str, Any] = orjson.loads(await ws.recv())
        if frame.get("type") != "ready":
            raise ApiError(frame.get("code", "unauthorized"), frame.get("message", "auth failed"))
        page = frame
        while page.get("more"):
            page = orjson.loads(await ws.recv())
            if page.get("type") == "conversations":
                frame["conversations"] += page["conversations"]
    return frame


async def cmd_chat(args: argparse.Namespace) -> int:
    try:
        from chatd.client import ui
    except ImportError:
        print(
            "chatd: the chat screen needs prompt_toolkit, the `client` extra: "
            f"{sys.executable} -m pip install 'chatd[client]' (in a checkout: ./scripts/bootstrap)",
            file=sys.stderr,
        )
        return 2
    profile = _profile(args)
    async with Api(args.url, profile["token"]) as api:
        conv = await api.conversation(args.target)
        names = await api.members(conv["id"])
    session = ChatSession(args.url, profile, conv, names, ui.out, ui.refresh)
    print(f"{session.title()}: type a line and press Enter; ^D or ^C quits")
    for saved in profile.get("outbox", {}).get(str(conv["id"]), []):
        # unsent last time: same client_msg_id
        session.submit(saved["body"], saved["client_msg_id"], saved.get("files"))
    try:
        await ui.run_chat(session)
    except Stop as exc:
        if exc.auth:  # the token is dead: forget it, so nothing uses it again
            profiles.remove(args.url, profile["username"])
            print(
                f"chatd: {exc}; log in again: {_hint(args, 'login ' + profile['username'])}", file=sys.stderr
            )
            return 1
        print(f"chatd: {exc}", file=sys.stderr)
        _keep_outbox(profile, conv["id"], session)
        return 1
    _keep_outbox(profile, conv["id"], session)
    return 0


async def cmd_watch(args: argparse.Namespace) -> int:
    from chatd.client.watch import Watch

    profile = _profile(args)
    try:
        await Watch(args.url, profile, lambda line: print(line, flush=True)).run()
    except Stop as exc:
        if exc.auth:
            profiles.remove(args.url, profile["username"])
        print(f"chatd: {exc}", file=sys.stderr)
        return 1
    return 0


async def cmd_download(args: argparse.Namespace) -> int:
    profile = _profile(args)
    async with Api(args.url, profile["token"]) as api:
        try:
            name, size = await api.download(args.file_id, args.output)
        except FileExistsError as exc:
            print(f"chatd: {exc.filename} exists; name another file with -o", file=sys.stderr)
            return 1
    print(f"saved {name} ({size} bytes)")
    return 0


def _keep_outbox(profile: profiles.Profile, cid: int, session: ChatSession) -> None:
    profile.setdefault("outbox", {})[str(cid)] = session.pending()
    profiles.save(profile)
    if session.outbox:
        print(f"{len(session.outbox)} unsent line(s) kept; they are sent when you open this chat again")


async def cmd_group(args: argparse.Namespace) -> int:
    profile = _profile(args)
    async with Api(args.url, profile["token"]) as api:
        if args.group_command == "create":
            conv = await api.call(
                "POST", "/v1/conversations/group", {"title": args.title, "usernames": args.users}
            )
            print(
                f"created #{conv['id']} {conv['title']} ({conv['member_count']} members); "
                f"chat: {_hint(args, 'chat ' + repr('#' + str(conv['id'])))}"
            )
            return 0
        cid = int(args.group.lstrip("#")) if args.group.lstrip("#").isdigit() else -1
        if cid < 1:
            raise SystemExit(f"chatd: {args.group!r}: expected a group id such as '#12'")
        if args.group_command == "add":
            result = await api.call("POST", f"/v1/conversations/{cid}/members", {"usernames": args.users})
            print("added" if result["event"] else "already members")
            return 0
        names = {n: uid for uid, n in (await api.members(cid)).items()}
        uid = names.get(args.user_to_remove.strip().lower())
        if uid is None:
            raise SystemExit(f"chatd: {args.user_to_remove} is not a member of #{cid}")
        await api.call("DELETE", f"/v1/conversations/{cid}/members/{uid}")
        print(f"removed {args.user_to_remove} from #{cid}")
        return 0


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(command(args))
        except ApiError as exc:
            print(f"chatd: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    return run


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    client = sub.add_parser("client", help="a terminal chat client")
    client.add_argument("--url", default=os.environ.get("CHATD_URL", DEFAULT_URL))
    client.add_argument(
        "--user",
        default=os.environ.get("CHATD_USER"),
        help="which logged-in user (needed once several are logged in to the URL)",
    )
    client_sub = client.add_subparsers(dest="client_command", required=True)
    for name, func in (("register", cmd_register), ("login", cmd_login)):
        cmd = client_sub.add_parser(name)
        cmd.add_argument("username")
        cmd.add_argument("--password", help="or CHATD_PASSWORD, or asked for")
        if name == "register":
            cmd.add_argument("--invite", help="or CHATD_INVITE, or asked for when the server needs one")
        cmd.set_defaults(func=_run(func))
    client_sub.add_parser("logout").set_defaults(func=_run(cmd_logout))
    passwd = client_sub.add_parser("passwd", help="change your password (your other devices are logged out)")
    passwd.add_argument("--password", help="the current one: or CHATD_PASSWORD, or asked for")
    passwd.add_argument("--new-password", help="or CHATD_NEW_PASSWORD, or asked for (twice)")
    passwd.set_defaults(func=_run(cmd_passwd))
    devices = client_sub.add_parser("devices", help="where you are logged in; --revoke ID logs one out")
    devices.add_argument("--revoke", type=int, metavar="ID")
    devices.set_defaults(func=_run(cmd_devices))
    client_sub.add_parser("list", help="conversations, unread counts, last activity").set_defaults(
        func=_run(cmd_list)
    )
    client_sub.add_parser(
        "watch", help="print a line per incoming message of any conversation (for a notifier)"
    ).set_defaults(func=_run(cmd_watch))
    chat = client_sub.add_parser("chat", help="chat with a user (NAME) or in a conversation (#ID)")
    chat.add_argument("target")
    chat.set_defaults(func=_run(cmd_chat))
    download = client_sub.add_parser("download", help="save a file sent in a conversation (its id)")
    download.add_argument("file_id", type=int)
    download.add_argument("-o", "--output", help="where to save it (default: its name, here)")
    download.set_defaults(func=_run(cmd_download))
    group = client_sub.add_parser("group", help="create a group, add or remove members")
    group_sub = group.add_subparsers(dest="group_command", required=True)
    create = group_sub.add_parser("create")
    create.add_argument("title")
    create.add_argument("users", nargs="*")
    add = group_sub.add_parser("add")
    add.add_argument("group", help="#ID")
    add.add_argument("users", nargs="+")
    remove = group_sub.add_parser("remove")
    remove.add_argument("group", help="#ID")
    remove.add_argument("user_to_remove", metavar="user")
    group.set_defaults(func=_run(cmd_group))
