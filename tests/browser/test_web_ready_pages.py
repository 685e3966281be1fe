"""Issue 19 item 13: `ready` comes in pages (protocol.md §4.1); the web app lists every
conversation of every page, and keeps them across a reconnect."""

from __future__ import annotations

import asyncio

import asyncpg

from chatd.devstack import Stack
from chatd.sessions.sync import READY_PAGE
from tests.abuse import insert_groups
from tests.browser.conftest import PersonFactory
from tests.helpers import Api

WATCH_LINK = """() => { window.linkStates = [];
  const link = document.getElementById('link');
  new MutationObserver(() => window.linkStates.push(link.dataset.connection))
    .observe(link, {attributes: true, attributeFilter: ['data-connection']}); }"""


async def test_every_page_of_ready_is_listed(
    people: PersonFactory, nginx: Api, db: asyncpg.Connection, stack: Stack
) -> None:
    me = await people("many")
    assert me.user is not None
    me.expect_errors(r"WebSocket connection to .* failed")  # while its worker restarts
    stranger = await nginx.user("str")
    groups = await insert_groups(db, stranger.id, READY_PAGE + 40, [me.user.id])
    page = await me.open_app()
    listed = page.locator("#conversations li[data-conversation-id]")
    last = page.locator(me.conversation(page, groups[-1]))
    await last.wait_for(state="attached")
    assert await listed.count() == len(groups)
    # After a reconnect (every worker restarted in turn), the first page of the new `ready` is
    # not taken for the whole list: nothing of the later pages is dropped.
    await page.evaluate(WATCH_LINK)
    loop = asyncio.get_running_loop()
    for index in range(stack.workers):
        await loop.run_in_executor(None, stack.stop_worker, index)  # drain: 1012
        await loop.run_in_executor(None, stack.start_worker, index)
    # `online` is shown on `synced`, after every page of the new `ready`.
    await page.wait_for_function("window.linkStates.includes('reconnecting')")
    await page.locator("#link[data-connection='online']").wait_for(timeout=60_000)
    assert await listed.count() == len(groups)
