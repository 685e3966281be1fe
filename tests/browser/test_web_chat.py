"""Scenario 1: two people chat 1:1 in two browsers; the receiver sees a message within 1 s."""

from __future__ import annotations

from pathlib import Path

from tests.browser.conftest import PersonFactory, shot
from tests.browser.timing import best_of
from tests.helpers import unique_name

RECEIVE_WITHIN_MS = 1000  # issue 11, scenario 1


async def test_register_login_and_chat(people: PersonFactory, artifacts: Path) -> None:
    alice = await people(register=False)
    bob = await people(register=False)
    names = {}
    for person, prefix in ((alice, "alice"), (bob, "bob")):
        page = await person.open_app()
        names[prefix] = unique_name(prefix)
        await page.get_by_label("Username", exact=True).fill(names[prefix])
        await page.get_by_label("Password", exact=True).fill("correct horse battery")
        await page.get_by_role("button", name="Register").click()
        await page.locator("#link[data-connection='online']").wait_for()

    a, b = alice.page, bob.page
    await a.get_by_label("Chat with (username)").fill(names["bob"])
    await a.get_by_label("Chat with (username)").press("Enter")
    await a.locator("#thread-body:not([hidden])").wait_for()
    cid = int(await a.locator("#thread-body").get_attribute("data-conversation-id") or 0)
    # Bob's list gets the new conversation live (conversation_added); he opens it.
    await bob.open_conversation(b, cid)
    await b.locator("#thread-title").filter(has_text=names["alice"]).wait_for()

    # Receive time measured in the pages: Bob's observer stamps the moment the row appears.
    async def receive(attempt: int) -> float:
        text = "hello bob" if attempt == 0 else f"hello bob, try {attempt + 1}"
        await b.evaluate(
            """(text) => { window.seenAt = null; window.seenText = text;
                if (window.seenWatch) return;
                window.seenWatch = new MutationObserver(() => {
                    if (!window.seenAt && [...document.querySelectorAll('#messages .body')]
                        .some(e => e.textContent === window.seenText)) window.seenAt = Date.now();
                });
                window.seenWatch.observe(document.getElementById('messages'),
                    {childList: true, subtree: true}); }""",
            text,
        )
        sent_at: float = await a.evaluate("Date.now()")
        await alice.send(a, text)
        await b.locator("#messages .body", has_text=text).wait_for()
        seen_at: float = await b.evaluate("window.seenAt")
        return seen_at - sent_at

    await best_of(receive, RECEIVE_WITHIN_MS, "received after")
    await a.locator("#messages li[data-state='saved'], #messages li[data-state='read']").first.wait_for()

    await bob.send(b, "hi alice")
    await a.locator("#messages .body", has_text="hi alice").wait_for()
    await shot(a, artifacts, "1-chat-alice")
    await shot(b, artifacts, "1-chat-bob")

    # Log out: back to the login screen, and the token no longer works.
    await a.get_by_role("button", name="Log out").click()
    await a.locator("#login:not([hidden])").wait_for()
    assert await a.evaluate("localStorage.getItem('chatd.token')") is None
