"""Scenario 5: workers restart under two open pages (SIGTERM, close 1012): both reconnect and
show every message exactly once, in order; a message typed while no worker is up stays
pending and is delivered exactly once when they return."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from playwright.async_api import Page, expect

from chatd.devstack import Stack
from tests.browser.conftest import Person, PersonFactory, shot
from tests.helpers import Api, Ws

WATCH_LINK = """() => { window.linkStates = [];
  const link = document.getElementById('link');
  new MutationObserver(() => window.linkStates.push(link.dataset.connection))
    .observe(link, {attributes: true, attributeFilter: ['data-connection']}); }"""


WATCH_BADGE = """(selector) => { window.badgeValues = [];
  const badge = document.querySelector(selector);
  new MutationObserver(() => window.badgeValues.push(badge.hidden ? 'hidden' : badge.dataset.unread))
    .observe(badge, {attributes: true, childList: true, characterData: true, subtree: true}); }"""


async def bodies(page: Page) -> list[str]:
    return await page.locator("#messages li.message .body").all_inner_texts()


async def restart(stack: Stack, index: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, stack.stop_worker, index)  # SIGTERM: drain, then 1012
    await loop.run_in_executor(None, stack.start_worker, index)


async def test_restarts_and_outbox(
    people: PersonFactory, nginx: Api, stack: Stack, db: asyncpg.Connection, artifacts: Path
) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    for person in (alice, bob):  # the browser's own report of a refused WebSocket while all are down
        person.expect_errors(r"WebSocket connection to .* failed")
    cid = await nginx.direct(alice.user, bob.user)
    # Bob also has one unread message elsewhere: its badge must not move across reconnects.
    carol = await nginx.user("carol")
    other = await nginx.direct(carol, bob.user)
    ws = await Ws.connect(nginx.base_url, carol.token)
    assert (await ws.send(other, "unread across restarts"))["type"] == "ack"
    await ws.close()
    a, b = await alice.open_app(), await bob.open_app()
    badge = f"#conversations li[data-conversation-id='{other}'] .badge"
    await b.locator(f"{badge}[data-unread='1']").wait_for()
    await b.evaluate(WATCH_BADGE, badge)
    pages: list[tuple[Person, Page]] = [(alice, a), (bob, b)]
    for person, page in pages:
        await person.open_conversation(page, cid)
        await page.evaluate(WATCH_LINK)
    expected: list[str] = []

    async def say(person: Person, page: Page, text: str, acked: bool = True) -> None:
        """Send; by default wait for the ack, so the order of `expected` is the commit order."""
        await person.send(page, text)
        expected.append(text)
        if acked:
            await (
                page.locator("#messages li.mine[data-state]", has_text=text)
                .and_(page.locator(":not([data-state='pending'])"))
                .wait_for()
            )

    await say(alice, a, "before the restart")
    await say(bob, b, "me too")
    # A rolling restart, mid-conversation: each page's worker goes away under it once.
    for index in range(stack.workers):
        stopping = asyncio.create_task(restart(stack, index))
        # Acked perhaps only after a `shutting_down` and a resend on the next connection.
        await say(alice, a, f"during restart {index + 1}")
        await stopping
        for _, page in pages:
            await page.locator("#link[data-connection='online']").wait_for()
        await say(bob, b, f"after restart {index + 1}")
    for _, page in pages:
        assert "reconnecting" in await page.evaluate("window.linkStates")
        await page.locator("#messages li.message .body", has_text="after restart 2").wait_for()
        await page.locator("#messages li.mine:not([data-state='saved']):not([data-state='read'])").wait_for(
            state="detached"
        )
        # Bob's own last row is there (and acked) before the event of Alice's message before it
        # need be: the ack and the fan-out are not ordered (protocol.md §4.3). Wait for the list.
        await expect(page.locator("#messages li.message .body")).to_have_text(expected, timeout=30_000)
    await shot(a, artifacts, "5-after-rolling-restart")

    # No worker at all: the pages say so, and what Alice types waits in her outbox.
    loop = asyncio.get_running_loop()
    for index in range(stack.workers):
        await loop.run_in_executor(None, stack.stop_worker, index)
    try:
        for _, page in pages:
            await page.locator("#link[data-connection='reconnecting']").wait_for()
        await say(alice, a, "typed while offline", acked=False)
        pending = a.locator("#messages li.mine[data-state='pending']", has_text="typed while offline")
        await pending.wait_for()
        await shot(a, artifacts, "5-pending-while-down")
    finally:
        for index in range(stack.workers):
            await loop.run_in_executor(None, stack.start_worker, index)
    await (
        a.locator("#messages li.mine[data-state]", has_text="typed while offline")
        .and_(a.locator(":not([data-state='pending'])"))
        .wait_for(timeout=60_000)
    )
    await b.locator("#messages .body", has_text="typed while offline").wait_for(timeout=60_000)
    for _, page in pages:
        assert await bodies(page) == expected
    # Two restarts and an outage later, the badge never showed anything but 1 (no flicker).
    assert await b.locator(badge).get_attribute("data-unread") == "1"
    assert set(await b.evaluate("window.badgeValues")) <= {"1"}
    stored = await db.fetch(
        "SELECT body FROM messages WHERE conversation_id = $1 AND kind = 'text' ORDER BY seq", cid
    )
    assert [r["body"] for r in stored] == expected
    await shot(b, artifacts, "5-delivered-once")
