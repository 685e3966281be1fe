"""Back and focus (issue 19, item 7): on a phone, the browser's Back from a conversation returns
to the list instead of leaving the app; after registering or logging in, the focus is on the
first thing to do, not on the page body."""

from __future__ import annotations

from tests.browser.conftest import PersonFactory
from tests.helpers import Api, unique_name

PHONE = {"viewport": {"width": 360, "height": 740}}


async def test_back_returns_to_the_list(people: PersonFactory, nginx: Api) -> None:
    alice, bob = await people("alice", **PHONE), await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    a = await alice.open_app()
    app_url = a.url
    await alice.open_conversation(a, cid)
    assert await a.locator("#sidebar").is_hidden()
    await a.go_back()
    await a.locator("#sidebar").wait_for()
    assert a.url == app_url
    assert await a.locator("#thread").is_hidden()
    assert await a.locator("#link[data-connection='online']").count() == 1  # the same page, still live
    await a.go_forward()
    await a.locator(f"#thread-body[data-conversation-id='{cid}']").wait_for()
    assert await a.locator("#sidebar").is_hidden()
    # The app's own back button does the same as the browser's: no entry is left behind it.
    await a.locator("#back").click()
    await a.locator("#sidebar").wait_for()
    await alice.open_conversation(a, cid)
    await a.go_back()
    await a.locator("#sidebar").wait_for()
    assert a.url == app_url


async def test_focus_after_register_and_login(people: PersonFactory) -> None:
    person = await people(register=False)
    page = await person.open_app()
    name = unique_name("focus")
    for button in ("Register", "Log in"):
        await page.get_by_label("Username", exact=True).fill(name)
        await page.get_by_label("Password", exact=True).fill("correct horse battery")
        await page.get_by_role("button", name=button).click()
        await page.locator("#link[data-connection='online']").wait_for()
        assert await page.evaluate("document.activeElement.id") == "direct-username"
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") != "Log out"
        await page.get_by_role("button", name="Log out").click()
        await page.locator("#login:not([hidden])").wait_for()
