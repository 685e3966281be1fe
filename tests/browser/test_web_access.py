"""Reach: keyboard only at 360 px wide, in dark mode, with new messages announced to screen
readers (the ARIA live region)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page, expect

from tests.browser.conftest import PersonFactory, shot
from tests.helpers import Api

PHONE = {"viewport": {"width": 360, "height": 740}, "color_scheme": "dark"}


async def tab_to(page: Page, selector: str, limit: int = 30) -> None:
    """Press Tab until `selector` has the focus, as a keyboard user would."""
    for _ in range(limit):
        if await page.evaluate("s => document.activeElement === document.querySelector(s)", selector):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"{selector} not reachable with Tab")


async def no_sideways_scroll(page: Page) -> None:
    wide = await page.evaluate(
        """() => [...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
            .map(e => `${e.tagName}#${e.id}.${e.className}`)"""
    )
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), wide


async def test_keyboard_only_on_a_phone_in_dark_mode(
    people: PersonFactory, nginx: Api, artifacts: Path
) -> None:
    alice, bob = await people("alice", **PHONE), await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(bob.user, alice.user)
    b = await bob.open_app()
    await bob.open_conversation(b, cid)
    a = await alice.open_app()
    background = await a.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 18, 23)"  # the dark palette (prefers-color-scheme: dark)
    await no_sideways_scroll(a)

    await tab_to(a, f"#conversations li[data-conversation-id='{cid}'] button")
    await a.keyboard.press("Enter")
    await a.locator(f"#thread-body[data-conversation-id='{cid}']").wait_for()
    assert await a.locator("#sidebar").is_hidden()  # one pane at a time on a phone
    assert await a.locator("#back").is_visible()
    # Opening a conversation moves the focus to the message box once its history is shown.
    # (a selector, not wait_for_function: the app's CSP forbids the eval that polling needs)
    await a.locator("#composer-input:focus").wait_for()
    await a.keyboard.type("typed with the keyboard")
    await a.keyboard.press("Enter")
    await b.locator("#messages .body", has_text="typed with the keyboard").wait_for()
    await no_sideways_scroll(a)

    await bob.send(b, "announced")
    await a.locator("#announcer p", has_text="announced").wait_for(state="attached")
    assert await a.locator("#announcer").get_attribute("aria-live") == "polite"
    await shot(a, artifacts, "access-phone-dark")

    await tab_to(a, "#back")
    await a.keyboard.press("Enter")
    # Back goes back in the browser's history: the list shows on its popstate, a task later.
    await expect(a.locator("#sidebar")).to_be_visible(timeout=30_000)
    # Every control has a name a screen reader can say.
    unnamed = await a.evaluate(
        """() => [...document.querySelectorAll('input, textarea, button')].filter(el => {
            if (el.closest('[hidden]')) return false;
            const label = el.labels && el.labels.length ? el.labels[0].textContent.trim() : '';
            return !(label || el.getAttribute('aria-label') || el.textContent.trim());
        }).map(el => el.outerHTML)"""
    )
    assert unnamed == []
