"""The terminal client tells about messages elsewhere (issue 22): `chat` rings the bell for a
message in another conversation (not a muted one), and `watch` prints a line per incoming
message of any conversation."""

from __future__ import annotations

import json

import httpx
import pexpect

from tests.test_client import CHATD, Local, local, quit_with

__all__ = ["local"]  # the module-scoped stack of test_client.py


def token(local: Local, user: str) -> str:
    profiles = json.loads(local.config.read_text())["profiles"]
    found: str = next(p["token"] for p in profiles if p["username"] == user)
    return found


def group(local: Local, owner: str, title: str, *members: str) -> str:
    created = local.client(owner, "group", "create", title, *members)
    assert created.returncode == 0, created.stderr
    return created.stdout.split("#", 1)[1].split()[0]


def test_chat_rings_the_bell_for_other_conversations_not_muted_ones(local: Local) -> None:
    alice, bob, carol = local.user(), local.user(), local.user()
    gid = group(local, carol, "elsewhere", alice)
    me = local.chat(alice, bob)
    them = local.chat(carol, f"#{gid}")
    them.sendline("look over here")
    them.expect("saved: look over here")
    me.expect(f"\a\\* new message in #{gid}")
    muted = httpx.put(
        f"{local.url}/v1/conversations/{gid}/mute",
        json={"muted": True},
        headers={"authorization": f"Bearer {token(local, alice)}"},
    )
    assert muted.status_code == 200, muted.text
    them.sendline("and again")
    them.expect("saved: and again")
    peer = local.chat(bob, alice)
    peer.sendline("barrier")  # after carol's second message: nothing rang before it
    me.expect(f"{bob}: barrier")
    assert "new message" not in (me.before or "")
    for child in (me, them, peer):
        assert quit_with(child, "d") == 0


def test_watch_prints_a_line_per_incoming_message(local: Local) -> None:
    alice, bob, carol = local.user(), local.user(), local.user()
    gid = group(local, carol, "team", alice)
    argv = ["client", "--url", local.url, "--user", alice, "watch"]
    watch = pexpect.spawn(CHATD, argv, env=local.env(), encoding="utf-8", timeout=30)
    direct = local.chat(bob, alice)  # opens the direct conversation
    # The watcher follows a conversation made after it started (conversation_added).
    direct.sendline("hello\nalice")
    direct.expect("saved")
    watch.expect(r"#(\d+) \(direct\) " + bob + r": hello")
    mine = local.chat(alice, f"#{gid}")
    mine.sendline("my own line")  # mine, from another device: not printed
    mine.expect("saved: my own line")
    in_group = local.chat(carol, f"#{gid}")
    in_group.sendline("team news")
    in_group.expect("saved: team news")
    watch.expect(rf"#{gid} \(team\) {carol}: team news")
    assert "my own line" not in (watch.before or "")
    for child in (direct, mine, in_group):
        assert quit_with(child, "d") == 0
    watch.sendcontrol("c")
    watch.expect(pexpect.EOF, timeout=10)
