"""Send order under the server's DEFAULT send limit (50 per 10 s): sixty messages typed within
about two seconds are stored, and shown on both sides, in the order they were typed (issue 19,
item 1). The session stack raises the limit for everyone, so this module runs on a small stack
of its own with the defaults."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Page, WebSocket

from chatd.devstack import Stack
from tests.browser.conftest import PersonFactory, shot
from tests.conftest import TEST_ENV
from tests.helpers import Api

WINDOW_S = 10  # CHATD_RATE_LIMIT_WINDOW_S's default; the limit's windows are aligned to it
BURST = [f"burst {n:02d}" for n in range(1, 61)]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """One worker with the default send limit (the rest as the session's stack)."""
    root = Path(tempfile.mkdtemp(prefix="chatd-test-limits-"))
    env = {k: v for k, v in TEST_ENV.items() if not k.startswith("CHATD_RATE_LIMIT_")}
    stack = Stack(root=root, workers=1, tcp_workers=True, extra_env=env)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(stack.database_url)
    yield conn
    await conn.close()


def count_refusals(page: Page) -> list[str]:
    """The `rate_limited` errors the server sends this page, as they arrive."""
    refused: list[str] = []

    def watch(ws: WebSocket) -> None:
        def received(payload: str | bytes) -> None:
            frame = json.loads(payload)
            if frame.get("type") == "error" and frame.get("code") == "rate_limited":
                refused.append(str(frame.get("ref")))

        ws.on("framereceived", received)

    page.on("websocket", watch)
    return refused


TYPE_BURST = """async (texts) => {
  const input = document.getElementById('composer-input');
  for (const text of texts) {
    input.value = text;
    input.dispatchEvent(new Event('input', {bubbles: true}));
    input.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true, cancelable: true}));
    await new Promise((done) => setTimeout(done, 33));
  }
}"""


async def bodies(page: Page) -> list[str]:
    return await page.locator("#messages li.message .body").all_inner_texts()


async def test_a_burst_over_the_send_limit_keeps_its_order(
    people: PersonFactory, nginx: Api, db: asyncpg.Connection, artifacts: Path
) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    a = await alice.new_page()
    refused = count_refusals(a)
    await a.goto(alice.base_url + "/")
    await a.locator("#link[data-connection='online']").wait_for()
    b = await bob.open_app()
    await alice.open_conversation(a, cid)
    await bob.open_conversation(b, cid)
    # Start right after a window boundary, so the whole burst falls in one window and the
    # limit refuses its last ten (not a timing assertion: only where the burst starts).
    await asyncio.sleep(WINDOW_S - time.time() % WINDOW_S + 0.05)
    # Typed in the page, one message every 33 ms (two seconds in all): as fast as a person
    # pasting lines, faster than the limit allows (Playwright's own keystrokes take ~100 ms
    # each on a busy machine).
    await a.evaluate(TYPE_BURST, BURST)
    # Everything is saved once the window after the burst lets the last ten through.
    saved = a.locator("#messages li.mine[data-state='saved'], #messages li.mine[data-state='read']")
    await saved.nth(len(BURST) - 1).wait_for(timeout=60_000)
    await b.locator("#messages .body", has_text=BURST[-1]).wait_for(timeout=30_000)
    assert refused, "the burst never reached the send limit: the test proved nothing"
    stored = await db.fetch(
        "SELECT body FROM messages WHERE conversation_id = $1 AND kind = 'text' ORDER BY seq", cid
    )
    assert [r["body"] for r in stored] == BURST
    assert await bodies(a) == BURST
    assert await bodies(b) == BURST
    await shot(b, artifacts, "order-burst-bob")


async def test_a_large_outbox_resent_after_a_reconnect_keeps_its_order(
    people: PersonFactory, nginx: Api, db: asyncpg.Connection
) -> None:
    """Sixty messages typed without a network go out together when it is back: over the limit,
    and still stored in the order typed."""
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    # The network goes away under the app: a request it has in flight then (the presence
    # lookup of the conversation it just opened, say) fails, and that is the scenario.
    alice.expect_errors(r"net::ERR_INTERNET_DISCONNECTED")
    cid = await nginx.direct(alice.user, bob.user)
    a = await alice.new_page()
    refused = count_refusals(a)
    await a.goto(alice.base_url + "/")
    await a.locator("#link[data-connection='online']").wait_for()
    await alice.open_conversation(a, cid)
    await alice.context.set_offline(True)
    try:
        await a.locator("#link[data-connection='offline']").wait_for()
        await a.evaluate(TYPE_BURST, BURST)
        await a.locator("#messages li.mine[data-state='pending']").nth(len(BURST) - 1).wait_for()
        await asyncio.sleep(WINDOW_S - time.time() % WINDOW_S + 0.05)  # the whole outbox in one window
    finally:
        await alice.context.set_offline(False)
    saved = a.locator("#messages li.mine[data-state='saved'], #messages li.mine[data-state='read']")
    await saved.nth(len(BURST) - 1).wait_for(timeout=60_000)
    assert refused, "the outbox never reached the send limit: the test proved nothing"
    stored = await db.fetch(
        "SELECT body FROM messages WHERE conversation_id = $1 AND kind = 'text' ORDER BY seq", cid
    )
    assert [r["body"] for r in stored] == BURST
    assert await bodies(a) == BURST
