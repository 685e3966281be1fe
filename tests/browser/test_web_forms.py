"""What the app says when something is refused or not yet done (issue 19, items 5, 6 and 9): the
server's own reason instead of a generic one, the message length limit while typing, and the
small things: "1 member", a blank username, a username over the limit, a stale error in the
members panel, a pending message in the list, and a connection refused for being one too many."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
from playwright.async_api import Route, expect

from tests.browser.conftest import PersonFactory, shot
from tests.helpers import Api, Ws, unique_name

GENERIC = "The server refused this message"


async def test_refusals_say_the_servers_reason(
    people: PersonFactory, nginx: Api, db: asyncpg.Connection
) -> None:
    stranger = await people(register=False)
    stranger.expect_errors(r"status of 400")  # the refusals, as the browser reports them
    page = await stranger.open_app()
    for name in ("bob smith", "bob@example.org"):
        await page.get_by_label("Username", exact=True).fill(name)
        await page.get_by_label("Password", exact=True).fill("correct horse battery")
        await page.get_by_role("button", name="Register").click()
        error = page.locator("#login-error", has_text="3-32 characters")
        await error.wait_for()
        assert GENERIC not in await error.inner_text()

    # A username over 32 characters, typed: not cut to 32 and registered, but refused, saying why.
    long_name = ("x" + uuid.uuid4().hex * 2)[:40]
    await page.get_by_label("Username", exact=True).fill("")
    await page.get_by_label("Username", exact=True).press_sequentially(long_name)
    assert await page.get_by_label("Username", exact=True).input_value() == long_name
    await page.get_by_role("button", name="Register").click()
    await page.locator("#login-error", has_text="3-32 characters").wait_for()
    assert await db.fetchval("SELECT count(*) FROM users WHERE username LIKE $1", long_name[:32] + "%") == 0

    alice = await people("alice")
    assert alice.user
    alice.expect_errors(r"status of 400")
    a = await alice.open_app()
    await a.get_by_label("Chat with (username)").fill(alice.user.name)
    await a.get_by_label("Chat with (username)").press("Enter")
    error = a.locator("#sidebar-error", has_text="another user")
    await error.wait_for()
    assert GENERIC not in await error.inner_text()
    await a.locator("#group-details summary").click()
    await a.get_by_label("Group title").fill("   ")
    await a.get_by_role("button", name="Create group").click()
    await a.locator("#sidebar-error", has_text="1 to 200 characters").wait_for()


async def test_the_length_limit_shows_while_typing(
    people: PersonFactory, nginx: Api, db: asyncpg.Connection, artifacts: Path
) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    a = await alice.open_app()
    await alice.open_conversation(a, cid)
    composer = a.locator("#composer-input")
    await composer.fill("é" * 3990)  # counted in code points, like the server
    counter = a.locator("#composer-count")
    await counter.filter(has_text="3990 / 4000").wait_for()
    await composer.fill("é" * 4001)
    await counter.filter(has_text="4001 / 4000").wait_for()
    assert await counter.get_attribute("data-over") == "true"
    await composer.press("Enter")  # refused before sending: nothing pending, nothing failed
    await a.locator("#composer-error", has_text="4000").wait_for()
    assert await composer.input_value() == "é" * 4001  # kept, to be shortened
    assert await a.locator("#messages li.mine").count() == 0
    await shot(a, artifacts, "forms-too-long")
    await composer.press("Backspace")
    await composer.press("Enter")
    await a.locator("#messages li.mine[data-state='saved']").wait_for()
    assert await a.locator("#composer-error").inner_text() == ""
    assert await db.fetchval("SELECT char_length(body) FROM messages WHERE conversation_id = $1", cid) == 4000


async def test_small_things(people: PersonFactory, nginx: Api, artifacts: Path) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    alice.expect_errors(r"status of 404")  # the unknown username, as the browser reports it
    alone = await nginx.group(alice.user, [], "just me")
    team = await nginx.group(alice.user, [bob.user], "team")
    a = await alice.open_app()
    await alice.open_conversation(a, alone)
    assert await a.locator("#thread-status").inner_text() == "1 member"
    await alice.open_conversation(a, team)
    assert await a.locator("#thread-status").inner_text() == "2 members"

    await a.locator("#members-toggle").click()
    add = a.get_by_label("Add a member (username)")
    await add.fill("   ")
    await add.press("Enter")
    await a.locator("#members-error", has_text="Type a username").wait_for()
    ghost = unique_name("ghost")
    await add.fill(ghost)
    await add.press("Enter")
    await a.locator("#members-error", has_text=f"No such user: {ghost}").wait_for()
    # Another conversation's members panel starts without the old error.
    await alice.open_conversation(a, alone)
    await a.locator("#members-toggle").click()
    await a.locator("#member-list li").first.wait_for()
    assert await a.locator("#members-error").inner_text() == ""

    # A message of mine still pending is what the list shows, not "No messages yet".
    direct = await nginx.direct(alice.user, bob.user)
    await a.locator(alice.conversation(a, direct)).wait_for()
    await alice.open_conversation(a, direct)
    await alice.context.set_offline(True)
    try:
        await alice.send(a, "still on its way")
        preview = a.locator(f"{alice.conversation(a, direct)} .preview")
        await preview.filter(has_text="still on its way").wait_for()
        assert "No messages yet" not in await preview.inner_text()
    finally:
        await alice.context.set_offline(False)
    await a.locator("#messages li.mine[data-state='saved']", has_text="still on its way").wait_for()


async def test_one_connection_too_many_says_so(people: PersonFactory, nginx: Api, artifacts: Path) -> None:
    carol = await people("carol")
    assert carol.user
    held = [await Ws.connect(nginx.base_url, carol.user.token) for _ in range(20)]  # the default cap
    try:
        page = await carol.new_page()
        await page.goto(carol.base_url + "/")
        link = page.locator("#link[data-connection='crowded']")
        await link.wait_for()
        assert "Too many connections" in await link.inner_text()
        reason = page.locator("#link-reason")
        await reason.filter(has_text="20").wait_for()
        await shot(page, artifacts, "forms-too-many-connections")
    finally:
        await held.pop().close()
    # One closed elsewhere: the app gets in on its own (its backoff), and the reason goes away.
    await page.locator("#link[data-connection='online']").wait_for(timeout=60_000)
    assert await page.locator("#link-reason").is_hidden()
    for ws in held:
        await ws.close()


async def test_a_slow_history_does_not_take_the_focus_back(people: PersonFactory, nginx: Api) -> None:
    """Opening a conversation focuses the composer once its history is in; if the user has
    gone on meanwhile (the members panel, typing a username), the focus stays where they are:
    an Enter meant for the panel once went to the composer under load (CI)."""
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    team = await nginx.group(alice.user, [bob.user], "team")
    ws = await Ws.connect(nginx.base_url, bob.user.token)
    try:
        assert (await ws.send(team, "hello team"))["type"] == "ack"
    finally:
        await ws.close()
    held, release = asyncio.Event(), asyncio.Event()

    async def hold(route: Route) -> None:
        held.set()
        await release.wait()
        await route.continue_()

    await alice.context.route(f"**/v1/conversations/{team}/messages*", hold)
    a = await alice.open_app()
    await a.locator(f"{alice.conversation(a, team)} button").click()
    await asyncio.wait_for(held.wait(), 30)
    await a.locator("#members-toggle").click()
    add = a.get_by_label("Add a member (username)")
    await add.fill("carol")
    release.set()
    # The history is rendered in the same task that focused the composer: a barrier.
    await a.locator("#messages li", has_text="hello team").wait_for()
    await expect(add).to_be_focused()
