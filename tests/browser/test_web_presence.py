"""Scenario 4: presence and typing. The peer's dot turns away when their tab is hidden and
offline after their page closes, within the documented grace; "typing" appears and expires."""

from __future__ import annotations

import time
from pathlib import Path

from playwright.async_api import Page

from tests.browser.conftest import PersonFactory, shot
from tests.conftest import TEST_ENV
from tests.helpers import Api

GRACE_S = float(TEST_ENV["CHATD_PRESENCE_GRACE_S"])
SWEEP_S = float(TEST_ENV["CHATD_PRESENCE_SWEEP_S"])
TYPING_SHOWN_S = 5  # web/app/js/store.js TYPING_SHOWN_MS, protocol.md §4.10

# Headless Chromium keeps every page "visible" (bringing another tab to the front or minimising
# the window changes nothing), so the test overrides the Page Visibility API the way a hidden
# tab reports itself and fires the event the browser would.
HIDE = """() => {
  Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
  Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
  document.dispatchEvent(new Event('visibilitychange'));
}"""
SHOW = """() => {
  delete document.visibilityState; delete document.hidden;
  document.dispatchEvent(new Event('visibilitychange'));
}"""


def dot(page: Page, cid: int, status: str) -> str:
    return f"#conversations li[data-conversation-id='{cid}'] .dot[data-presence='{status}']"


async def test_away_offline_and_typing(people: PersonFactory, nginx: Api, artifacts: Path) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    await nginx.direct(bob.user, alice.user)  # Bob opens it too: his presence is shared (§4.9)
    b = await bob.open_app()
    a = await alice.open_app()
    await alice.open_conversation(a, cid)
    await a.locator(dot(a, cid, "online")).wait_for()
    await a.locator("#thread-dot[data-presence='online']").wait_for()

    await b.evaluate(HIDE)
    await a.locator(dot(a, cid, "away")).wait_for()
    await shot(a, artifacts, "4-peer-away")
    await b.evaluate(SHOW)
    await a.locator(dot(a, cid, "online")).wait_for()

    await bob.open_conversation(b, cid)
    await b.locator("#composer-input").press_sequentially("hel")
    typing = a.locator(f"#typing[data-typing='{bob.user.id}']")
    await typing.wait_for()
    assert bob.user.name in await typing.inner_text()
    shown = time.monotonic()
    await shot(a, artifacts, "4-typing")
    # Nothing refreshes it: it goes away by itself after TYPING_SHOWN_S.
    await a.locator("#typing:not([data-typing])").wait_for(timeout=(TYPING_SHOWN_S + 5) * 1000)
    assert time.monotonic() - shown >= TYPING_SHOWN_S - 1.5

    closed = time.monotonic()
    await b.close()
    await a.locator(dot(a, cid, "offline")).wait_for(timeout=30_000)
    took = time.monotonic() - closed
    assert took < GRACE_S + SWEEP_S + 5, f"offline after {took:.1f} s"
    assert "last seen" in await a.locator("#thread-status").inner_text()
    await shot(a, artifacts, "4-peer-offline")
