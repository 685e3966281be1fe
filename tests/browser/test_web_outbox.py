"""A message typed while "Reconnecting…" is not lost when its tab closes (issue 19, item 2): it is
sent once the app is open again, by the next tab of that user, or at once by another tab that
is still open; exactly one tab sends it, and it is stored once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from playwright.async_api import Page

from chatd.devstack import Stack
from tests.browser.conftest import Person, PersonFactory, shot
from tests.helpers import Api

OUTBOX_KEYS = "Object.keys(localStorage).filter(k => k.startsWith('chatd.outbox.'))"
SENT = ["typed, then the tab closed", "left to the other tab"]


async def stop_workers(stack: Stack) -> None:
    loop = asyncio.get_running_loop()
    for index in range(stack.workers):
        await loop.run_in_executor(None, stack.stop_worker, index)


async def start_workers(stack: Stack) -> None:
    loop = asyncio.get_running_loop()
    for index in range(stack.workers):
        await loop.run_in_executor(None, stack.start_worker, index)


async def type_while_down(person: Person, page: Page, stack: Stack, text: str) -> None:
    """Workers down: the page says Reconnecting…, and `text` is typed and stays pending."""
    await page.locator("#link[data-connection='reconnecting']").wait_for()
    await person.send(page, text)
    await page.locator("#messages li.mine[data-state='pending']", has_text=text).wait_for()


async def saved(page: Page, text: str) -> None:
    await (
        page.locator("#messages li.mine[data-state]", has_text=text)
        .and_(page.locator(":not([data-state='pending'])"))
        .wait_for(timeout=60_000)
    )


async def stored(db: asyncpg.Connection, cid: int) -> list[str]:
    rows = await db.fetch("SELECT body FROM messages WHERE conversation_id = $1 ORDER BY seq", cid)
    return [r["body"] for r in rows]


async def test_pending_sends_outlive_their_tab(
    people: PersonFactory, nginx: Api, stack: Stack, db: asyncpg.Connection, artifacts: Path
) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    alice.expect_errors(r"WebSocket connection to .* failed")
    cid = await nginx.direct(alice.user, bob.user)

    # One tab: typed while the server is away, then the tab is closed; the app opened again
    # (once the server is back) sends it.
    first = await alice.open_app()
    await alice.open_conversation(first, cid)
    # Its history (empty) is loaded before the workers go: the focus moves to the message box
    # then; a history request refused meanwhile would be a failure of its own.
    await first.locator("#composer-input:focus").wait_for()
    await stop_workers(stack)
    try:
        await type_while_down(alice, first, stack, "typed, then the tab closed")
        await first.close()
    finally:
        await start_workers(stack)
    again = await alice.open_app()
    await alice.open_conversation(again, cid)
    await saved(again, "typed, then the tab closed")
    assert await stored(db, cid) == ["typed, then the tab closed"]

    # Two tabs: the one that is still open takes over what the closed one had pending.
    other = await alice.open_app()
    await alice.open_conversation(other, cid)
    # Its history is on screen before the workers go (what it shows is compared below).
    await other.locator("#messages .body", has_text="typed, then the tab closed").wait_for()
    await stop_workers(stack)
    try:
        await type_while_down(alice, again, stack, "left to the other tab")
        await other.locator("#link[data-connection='reconnecting']").wait_for()
        await again.close()
        pending = other.locator("#messages li.mine[data-state='pending']", has_text="left to the other tab")
        await pending.wait_for()
        await shot(other, artifacts, "outbox-taken-over")
    finally:
        await start_workers(stack)
    await saved(other, "left to the other tab")
    assert await stored(db, cid) == SENT
    assert await other.locator("#messages li.message .body").all_inner_texts() == await stored(db, cid)
    # Nothing is left pending for a tab opened now.
    last = await alice.open_app()
    await alice.open_conversation(last, cid)
    await last.locator("#messages .body", has_text="left to the other tab").wait_for()
    assert await last.locator("#messages li.message .body").all_inner_texts() == await stored(db, cid)
    assert await last.evaluate(OUTBOX_KEYS) == []

    # Logging out forgets what that tab had pending: not kept in the browser, not sent by another tab.
    alice.expect_errors(r"status of 502")  # the logout itself, while no worker answers
    await stop_workers(stack)
    try:
        await type_while_down(alice, last, stack, "typed, then logged out")
        await last.get_by_role("button", name="Log out").click()
        await last.locator("#login:not([hidden])").wait_for()
        assert await last.evaluate(OUTBOX_KEYS) == []
    finally:
        await start_workers(stack)
    await other.locator("#link[data-connection='online']").wait_for()
    await alice.send(other, "after the logout")
    await saved(other, "after the logout")
    assert await stored(db, cid) == [*SENT, "after the logout"]
