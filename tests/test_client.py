"""`chatd client` driven in a pseudo-terminal against a local stack of its own (`chatd dev up`)."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pexpect
import pytest

from chatd.processes import free_port
from tests.helpers import unique_name

CHATD = str(Path(sys.executable).parent / "chatd")
PASSWORD = "correct horse battery"
STACK_ENV = {
    "CHATD_ARGON2_TIME_COST": "1",
    "CHATD_ARGON2_MEMORY_KIB": "1024",
    "CHATD_PRESENCE_TTL_S": "3",
    "CHATD_PRESENCE_HEARTBEAT_S": "1",
    "CHATD_PRESENCE_SWEEP_S": "0.5",
    "CHATD_PRESENCE_GRACE_S": "1",
    "CHATD_RECEIPT_PUSH_INTERVAL_MS": "200",
    "CHATD_REGISTRATION": "open",  # users register without invites here (one test asks for one)
}


class Local:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.url = f"http://127.0.0.1:{port}"
        self.config = root / "client.json"  # one file for every user: profiles must not collide

    def dev(self, *args: str) -> None:
        done = subprocess.run(
            [CHATD, "dev", *args, "--dir", str(self.root)],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, **STACK_ENV},
        )
        assert done.returncode == 0, done.stderr

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CHATD_CLIENT_CONFIG": str(self.config),
            "CHATD_PASSWORD": PASSWORD,
            "PROMPT_TOOLKIT_NO_CPR": "1",  # pexpect answers no cursor position requests
            "TERM": "xterm",
        }

    def client(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [CHATD, "client", "--url", self.url, "--user", user, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=self.env())

    def user(self) -> str:
        name = unique_name("c").replace("-", "")[:20]
        assert self.client(name, "register", name).returncode == 0
        login = self.client(name, "login", name)
        assert login.returncode == 0, login.stderr
        return name

    def chat(self, user: str, target: str) -> pexpect.spawn[str]:
        argv = ["client", "--url", self.url, "--user", user, "chat", target]
        child = pexpect.spawn(CHATD, argv, env=self.env(), encoding="utf-8", timeout=30, dimensions=(40, 200))
        child.expect(f"connected as {user}[^\r\n]*")
        return child


@pytest.fixture(scope="module")
def local() -> Iterator[Local]:
    root = Path(tempfile.mkdtemp(prefix="chatd-clienttest-"))
    stack = Local(root, free_port())
    stack.dev("up", "--port", stack.url.rsplit(":", 1)[1])
    try:
        yield stack
    finally:
        subprocess.run([CHATD, "dev", "down", "--dir", str(root)], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def quit_with(child: pexpect.spawn[str], key: str) -> int:
    # Only once the prompt holds the terminal (raw mode: echo off): before that the terminal
    # driver takes ^D as end-of-file and ^C as SIGINT, and prompt_toolkit never sees the key
    # (a ^D sent while the client was still connecting was lost, and the client waited on).
    child.waitnoecho(timeout=10)
    assert not child.getecho(), "the prompt never took the terminal"
    child.sendcontrol(key)
    child.expect(pexpect.EOF, timeout=10)  # at once: no Enter needed, no hang
    child.close()
    assert "Traceback" not in (child.before or "")
    return int(child.exitstatus or 0)


def test_history_states_and_presence(local: Local) -> None:
    alice, bob = local.user(), local.user()
    first = local.chat(alice, bob)
    first.sendline("sent before bob ever opened the chat")
    first.expect("saved: sent before bob")
    assert quit_with(first, "d") == 0

    them = local.chat(bob, alice)  # first open: the history is there
    assert "sent before bob ever opened the chat" in (them.before or "")
    if f"{alice} is offline" not in str(them.after):  # still in alice's grace period
        them.expect(f"{alice} is offline")
    me = local.chat(alice, bob)
    screen = io.StringIO()
    me.logfile_read = screen
    assert f"{bob} is online" in str(me.after)  # presence of the peer
    them.expect(f"{alice} is online")
    me.sendline("are you there")
    me.expect("saved: are you there")
    them.expect(f"{alice}: are you there")  # bob's client shows it and marks it read
    me.expect(f"read by {bob}: are you there")
    assert screen.getvalue().count(f"{alice}: are you there") == 1  # own line shown once
    assert quit_with(them, "c") == 0
    me.expect(f"{bob} is offline")
    assert quit_with(me, "d") == 0


def test_client_stops_on_a_revoked_token(local: Local) -> None:
    alice, bob = local.user(), local.user()
    chat = local.chat(alice, bob)
    assert local.client(alice, "logout").returncode == 0  # another terminal logs the token out
    chat.expect("log in again", timeout=15)
    chat.expect(pexpect.EOF, timeout=10)
    chat.close()
    assert chat.exitstatus == 1
    assert local.client(alice, "list").returncode != 0  # the dead token is forgotten


def test_group_create_add_remove_and_receipts(local: Local) -> None:
    alice, bob, carol = local.user(), local.user(), local.user()
    created = local.client(alice, "group", "create", "team", bob)
    assert created.returncode == 0, created.stderr
    gid = created.stdout.split("#", 1)[1].split()[0]
    assert f"chat '#{gid}'" in created.stdout, "the hint is a command that works"
    assert local.client(alice, "group", "add", f"#{gid}", carol).returncode == 0
    me = local.chat(alice, f"#{gid}")
    them = local.chat(bob, f"#{gid}")
    them.sendline("here")  # bob takes part: only then are his reads shown (protocol.md §4.9)
    them.expect("saved: here")
    me.expect(f"{bob}: here")
    me.sendline("hello team")
    me.expect("saved: hello team")
    them.expect(f"{alice}: hello team")
    me.expect("read by 1 of 2: hello team")
    removed = local.client(alice, "group", "remove", f"#{gid}", bob)
    assert removed.returncode == 0, removed.stderr
    them.expect("you were removed")
    them.expect(pexpect.EOF, timeout=10)
    listed = local.client(alice, "list")
    assert listed.returncode == 0 and "team (2 members)" in listed.stdout, listed.stdout
    assert quit_with(me, "d") == 0


def test_a_line_typed_while_the_stack_is_down_is_delivered_once(local: Local) -> None:
    alice, bob = local.user(), local.user()
    chat = local.chat(alice, bob)
    local.dev("down")
    chat.expect("disconnected", timeout=20)
    chat.sendline("typed while down")
    chat.expect("pending")
    local.dev("up")
    chat.expect("saved: typed while down", timeout=90)
    assert quit_with(chat, "d") == 0

    login = httpx.post(f"{local.url}/v1/login", json={"username": bob, "password": PASSWORD}).json()
    auth = {"authorization": f"Bearer {login['token']}"}
    conv = httpx.post(f"{local.url}/v1/conversations/direct", json={"username": alice}, headers=auth).json()
    history = httpx.get(f"{local.url}/v1/conversations/{conv['id']}/messages", headers=auth).json()
    assert [m["body"] for m in history["messages"]] == ["typed while down"]


def test_chat_without_prompt_toolkit_names_the_extra() -> None:
    hide = "import sys; sys.modules['prompt_toolkit'] = None; from chatd.cli import main; main()"
    argv = [sys.executable, "-c", hide, "client", "--user", "nobody", "chat", "somebody"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "chatd[client]" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_upload_and_download_a_file(local: Local, tmp_path: Path) -> None:
    alice, bob = local.user(), local.user()
    source = tmp_path / "report.pdf"
    source.write_bytes(b"%PDF-1.4\n" + os.urandom(300_000))
    me = local.chat(alice, bob)
    me.sendline(f"/upload {source}")
    me.expect(r"\[file\] report.pdf \(300.0 KB\) · chatd client --user \S+ download (\d+)")
    assert isinstance(me.match, re.Match)
    file_id = me.match.group(1)
    me.expect("saved")
    them = local.chat(bob, alice)  # the history shows it with the command to save it
    shown = f"[file] report.pdf (300.0 KB) · chatd client --user {bob} download {file_id}"
    assert shown in (them.before or "")
    saved = tmp_path / "copy.pdf"
    done = local.client(bob, "download", file_id, "-o", str(saved))
    assert done.returncode == 0, done.stderr
    assert saved.read_bytes() == source.read_bytes()
    # a missing file is said, not a traceback; nothing is sent
    me.sendline(f"/upload {tmp_path / 'missing.txt'}")
    me.expect("not uploaded")
    outsider = local.user()
    refused = local.client(outsider, "download", file_id, "-o", str(tmp_path / "x"))
    assert refused.returncode == 1
    assert "not_found" in refused.stderr
    assert quit_with(them, "d") == 0
    assert quit_with(me, "d") == 0


def test_edit_and_delete_the_last_message(local: Local) -> None:
    alice, bob = local.user(), local.user()
    me = local.chat(alice, bob)
    them = local.chat(bob, alice)
    me.sendline("meet at noon")
    me.expect("saved: meet at noon")
    me.sendline("bring teh slides")
    me.expect("saved: bring teh slides")
    them.expect(f"{alice}: bring teh slides")
    me.sendline("/edit bring the slides")
    them.expect(f"{alice} edited a message: bring the slides")
    me.expect(f"{alice} edited a message: bring the slides")
    me.sendline("/delete")
    them.expect(f"{alice} deleted a message")
    me.sendline("/edit #1 meet at one")  # an earlier one, by its seq
    them.expect(f"{alice} edited a message: meet at one")
    me.sendline("/edit")
    me.expect("usage: /edit")
    assert quit_with(them, "d") == 0
    later = local.chat(bob, alice)  # history: the current versions only
    shown = later.before or ""
    assert "meet at one (edited)" in shown and "(message deleted)" in shown
    assert "teh" not in shown and "meet at noon" not in shown
    assert quit_with(later, "d") == 0
    assert quit_with(me, "d") == 0


def test_devices_lists_and_revokes_and_passwd_logs_the_other_devices_out(local: Local) -> None:
    alice = local.user()
    body = {"username": alice, "password": PASSWORD}
    phone = httpx.post(f"{local.url}/v1/login", json=body, headers={"user-agent": "alice's phone"}).json()
    listed = local.client(alice, "devices")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert any("chatd-client/" in row and " * " in f"{row} " for row in rows), listed.stdout
    assert any("alice's phone" in row and "127.0.0.1" in row for row in rows), listed.stdout
    phone_auth = {"authorization": f"Bearer {phone['token']}"}
    sessions = httpx.get(f"{local.url}/v1/me/sessions", headers=phone_auth).json()["sessions"]
    (mine,) = [s for s in sessions if s["current"]]
    revoked = local.client(alice, "devices", "--revoke", str(mine["id"]))
    assert revoked.returncode == 0 and f"device {mine['id']} logged out" in revoked.stdout, revoked.stderr
    assert httpx.get(f"{local.url}/v1/me", headers=phone_auth).status_code == 401

    tablet = httpx.post(f"{local.url}/v1/login", json=body).json()
    changed = local.client(alice, "passwd", "--new-password", "a brand new password")
    assert changed.returncode == 0 and "1 other device(s) logged out" in changed.stdout, changed.stderr
    tablet_auth = {"authorization": f"Bearer {tablet['token']}"}
    assert httpx.get(f"{local.url}/v1/me", headers=tablet_auth).status_code == 401
    assert local.client(alice, "list").returncode == 0  # this terminal's login still works
    wrong = local.client(alice, "passwd", "--new-password", "yet another password")  # the old one, wrong now
    assert wrong.returncode == 1 and "wrong_password" in wrong.stderr


def test_register_asks_for_an_invite_when_the_server_needs_one(local: Local) -> None:
    from chatd.devstack import Stack

    port = free_port()
    env = {**Stack.load(local.root).env(), **STACK_ENV, "CHATD_REGISTRATION": "invite"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "chatd", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert worker.poll() is None and time.monotonic() < deadline, "the worker did not start"
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        admin = unique_name("a").replace("-", "")[:20]
        made = subprocess.run(
            [CHATD, "dev", "admin", "--dir", str(local.root), "create-user", admin, "--admin"],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        body = {"username": admin, "password": PASSWORD}
        token = httpx.post(f"{url}/v1/login", json=body, timeout=30).json()["token"]
        auth = {"authorization": f"Bearer {token}"}
        created = httpx.post(f"{url}/v1/admin/invites", json={"max_uses": 1}, headers=auth, timeout=30)
        invite = created.json()["token"]
        name = unique_name("c").replace("-", "")[:20]
        register = [CHATD, "client", "--url", url, "register", name]
        # No invite and no terminal to ask on: one line saying how.
        done = subprocess.run(register, capture_output=True, text=True, timeout=60, env=local.env())
        assert done.returncode == 1 and "--invite" in done.stderr, done.stderr
        # On a terminal it asks, because the server says it needs one.
        child = pexpect.spawn(CHATD, register[1:], env=local.env(), encoding="utf-8", timeout=30)
        child.expect("invite")
        child.sendline(invite)
        child.expect(f"registered {name}")
        child.expect(pexpect.EOF)
        # The invite had one use.
        again = subprocess.run(
            [*register[:-1], name + "x", "--invite", invite], capture_output=True, text=True, env=local.env()
        )
        assert again.returncode == 1 and "invalid_invite" in again.stderr, again.stderr
    finally:
        worker.terminate()
        worker.wait(15)
