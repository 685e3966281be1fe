"""The rest of what a user does: scroll back through history by pages with day separators,
manage a group's members, and be sent back to the login screen when the token is revoked
(close 4001). (An over-long message is refused before it is sent: test_web_forms.py.)"""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
from playwright.async_api import expect

from tests.browser.conftest import PersonFactory, shot
from tests.helpers import Api, Ws


async def test_scroll_back_and_day_separators(
    people: PersonFactory, nginx: Api, db: asyncpg.Connection, artifacts: Path
) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    ws = await Ws.connect(nginx.base_url, bob.user.token)
    for i in range(1, 61):
        assert (await ws.send(cid, f"history {i}"))["type"] == "ack"
    await ws.close()
    # The first ten happened two days ago (a separator of their own).
    await db.execute(
        "UPDATE messages SET created_at = created_at - interval '2 days'"
        " WHERE conversation_id = $1 AND seq <= 10",
        cid,
    )
    a = await alice.open_app()
    await alice.open_conversation(a, cid)
    bodies = a.locator("#messages li.message .body")
    await a.locator("#messages .body", has_text="history 60").wait_for()
    assert await bodies.count() == 50  # one page (limit 50), newest last
    # The button, as a keyboard user presses it. (A click first scrolls it into view, which is
    # the top of the list, where the app loads the page by itself: under load the page came in
    # between the scroll and the click, the rows took the button's place and it was hidden, CI.)
    await a.locator("#older").focus()
    await a.keyboard.press("Enter")
    await a.locator("#messages .body").get_by_text("history 1", exact=True).wait_for()
    texts = await bodies.all_inner_texts()
    assert texts == [f"history {i}" for i in range(1, 61)]
    assert await a.locator("#older").is_hidden()  # the start of the conversation
    days = await a.locator("#messages li.day").all_inner_texts()
    assert len(days) == 2 and days[1] == "Today"
    # Everything on screen was marked read: no badge left.
    await a.locator(f"{alice.conversation(a, cid)} .badge[data-unread='0']").wait_for(state="attached")
    await shot(a, artifacts, "history-paged")


async def test_group_members_and_revoked_token(people: PersonFactory, nginx: Api) -> None:
    owner, member, newcomer = await people("owner"), await people("member"), await people("newcomer")
    assert owner.user and member.user and newcomer.user
    o = await owner.open_app()
    await o.locator("#group-details summary").click()
    await o.get_by_label("Group title").fill("planning")
    await o.get_by_label("Members (usernames, separated by commas)").fill(member.user.name)
    await o.get_by_role("button", name="Create group").click()
    await o.locator("#thread-title", has_text="planning").wait_for()
    await o.locator("#members-toggle").click()
    await o.get_by_label("Add a member (username)").fill(newcomer.user.name)
    await o.get_by_label("Add a member (username)").press("Enter")
    await o.locator("#messages li.system", has_text=f"added {newcomer.user.name}").wait_for()
    await o.locator(f"#member-list li[data-user-id='{newcomer.user.id}']").wait_for()
    await o.get_by_role("button", name=f"Remove {member.user.name}").click()
    await o.locator("#messages li.system", has_text=f"removed {member.user.name}").wait_for()
    await o.locator(f"#member-list li[data-user-id='{member.user.id}']").wait_for(state="detached")
    # A name that does not exist: the form says so, nothing is created.
    await o.locator("#group-details summary").click()
    await o.get_by_label("Group title").fill("ghosts")
    ghost = "ghost-" + uuid.uuid4().hex[:8]
    owner.expect_errors(r"status of 404")  # the lookup's answer, reported by the browser
    await o.get_by_label("Members (usernames, separated by commas)").fill(ghost)
    await o.get_by_role("button", name="Create group").click()
    await o.locator("#sidebar-error", has_text=f"No such user: {ghost}").wait_for()

    # Two tabs share a token; logging out in one closes the other's socket with 4001.
    m1 = await member.open_app()
    m2 = await member.open_app()
    await m1.get_by_role("button", name="Log out").click()
    await m2.locator("#login:not([hidden])").wait_for()


MARK_ROWS = """() => { window.marked = [...document.querySelectorAll('#messages > li')];
  window.marked.forEach((li, i) => { li.chatdMarker = i; }); return window.marked.length; }"""
MARKED_KEPT = """() => window.marked.filter((li, i) =>
  li.isConnected && li.chatdMarker === i && li.closest('#messages')).length"""


async def test_older_pages_render_only_what_changed(people: PersonFactory, nginx: Api) -> None:
    """Loading an older page, or the peer reading, leaves the rows already shown in place: the
    same DOM nodes, not a re-render of the whole list (issue 19, item 10)."""
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    ws = await Ws.connect(nginx.base_url, bob.user.token)
    for i in range(1, 121):
        assert (await ws.send(cid, f"page {i}"))["type"] == "ack"
    a = await alice.open_app()
    await alice.open_conversation(a, cid)
    # The first page is on screen before mine is sent (else mine may be the page's newest row).
    await a.locator("#messages .body").get_by_text("page 120", exact=True).wait_for()
    await alice.send(a, "mine")
    # Mine as it stays: its ack says saved, and its own event (which may come after the ack,
    # protocol.md §4.3) rebuilds the row, adding its menu; and the members (a fetch started at
    # `ready`) are in, as the title says, or their names would rebuild every row later.
    mine = a.locator("#messages li.mine[data-state='saved']", has_text="mine")
    await mine.get_by_role("button", name="Message actions").wait_for()
    await expect(a.locator("#thread-title")).to_have_text(bob.user.name, timeout=30_000)
    shown = await a.evaluate(MARK_ROWS)
    assert shown >= 52  # a day separator, the last page of 50 and mine
    # Scrolled to the top, the app loads the page before (a click on #older would scroll there
    # first, and a click landing after that page is in would be retried, scrolling again: two pages).
    await a.locator("#scroller").evaluate("(scroller) => { scroller.scrollTop = 0; }")
    await a.locator("#messages .body").get_by_text("page 21", exact=True).wait_for()
    assert await a.locator("#messages li.message").count() == 101
    assert await a.evaluate(MARKED_KEPT) == shown
    assert await a.locator("#messages li.day").count() == 1  # still one day, one separator
    # The peer reads mine: its row changes, the others stay as they are.
    assert (await ws.read(cid, 121))["type"] == "read_state"
    await a.locator("#messages li.mine[data-state='read']").wait_for()
    assert await a.evaluate(MARKED_KEPT) == shown - 1
    texts = await a.locator("#messages li.message .body").all_inner_texts()
    assert texts == [f"page {i}" for i in range(21, 121)] + ["mine"]
    await ws.close()
