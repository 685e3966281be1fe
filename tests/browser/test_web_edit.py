"""Issue 21 in the web app: edit the last message with ↑ and the other person sees "edited";
delete with confirmation leaves a tombstone on both sides; links are real links with the right
rel and only for http(s); @mentions of members are highlighted, counted in the badge, and
autocompleted."""

from __future__ import annotations

from pathlib import Path

from tests.browser.conftest import PersonFactory, shot
from tests.helpers import Api, Ws


async def test_edit_last_message_with_arrow_up_and_delete_with_confirmation(
    people: PersonFactory, nginx: Api, artifacts: Path
) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    a, b = await alice.open_app(), await bob.open_app()
    await alice.open_conversation(a, cid)
    await bob.open_conversation(b, cid)
    await alice.send(a, "see you at 10")
    await alice.send(a, "typo here: teh")
    await b.locator("#messages .body", has_text="typo here: teh").wait_for()
    # ↑ takes the last own message the app holds as stored: its own event (not only its ack,
    # which may come first, protocol.md §4.3), which gives its row the menu.
    mine = a.locator("#messages li.mine", has_text="typo here: teh")
    await mine.get_by_role("button", name="Message actions").wait_for()

    # ↑ in the empty box takes the last own message; Enter saves the edit.
    box = a.locator("#composer-input")
    await box.press("ArrowUp")
    assert await box.input_value() == "typo here: teh"
    await a.locator("#editing:not([hidden])").wait_for()
    await box.fill("typo here: the")
    await box.press("Enter")
    theirs = b.locator("#messages li.theirs[data-edited='true']", has_text="typo here: the")
    await theirs.wait_for()
    assert "(edited)" in await theirs.locator(".meta").inner_text()
    await a.locator("#messages li.mine[data-edited='true']", has_text="typo here: the").wait_for()
    assert await box.input_value() == ""
    assert await b.locator("#messages .body", has_text="teh").count() == 0
    await shot(b, artifacts, "21-edited-bob")

    # Delete from the message's menu, confirmed: a tombstone on both sides.
    row = a.locator("#messages li.mine", has_text="see you at 10")
    await row.get_by_role("button", name="Message actions").click()
    await row.locator(".delete-button").click()
    assert await b.locator("#messages li[data-deleted='true']").count() == 0, "deleted before confirming"
    await row.locator(".confirm-delete").click()
    for page in (a, b):
        tomb = page.locator("#messages li[data-deleted='true']")
        await tomb.wait_for()
        assert await tomb.locator(".body").inner_text() == "Message deleted"
    assert await b.locator("#messages .body", has_text="see you at 10").count() == 0
    await shot(a, artifacts, "21-deleted-alice")

    # A reload shows the current versions from history.
    await b.reload()
    await b.locator("#link[data-connection='online']").wait_for()
    await bob.open_conversation(b, cid)
    await b.locator("#messages li[data-deleted='true']").wait_for()
    await b.locator("#messages li[data-edited='true']", has_text="typo here: the").wait_for()


async def test_links_and_mentions(people: PersonFactory, nginx: Api, artifacts: Path) -> None:
    alice, bob, carol = await people("alice"), await people("bob"), await people("carol")
    assert alice.user and bob.user and carol.user
    group = await nginx.group(alice.user, [bob.user, carol.user], title="links")
    b = await bob.open_app()  # Bob has not opened the conversation: the mention is in his badge
    ws = await Ws.connect(nginx.base_url, carol.user.token)
    assert (await ws.send(group, "no mention here"))["seq"] == 1
    await ws.close()
    a = await alice.open_app()
    await alice.open_conversation(a, group)

    # Autocomplete: "@bo" offers bob; Enter picks it.
    box = a.locator("#composer-input")
    await a.locator("#members-toggle").click()  # members are loaded with the conversation
    await a.locator("#member-list li").nth(2).wait_for()
    await a.locator("#members-toggle").click()
    await box.press_sequentially(f"hi @{bob.user.name[:3]}")
    option = a.locator(f"#mention-list li[data-username='{bob.user.name}']")
    await option.wait_for()
    await box.press("Enter")
    assert await box.input_value() == f"hi @{bob.user.name} "
    await box.press_sequentially("see https://example.org/a?b=1, and javascript:alert(1) and @nobody_here")
    await box.press("Enter")

    row = a.locator("#messages li.mine", has_text="example.org")
    await row.wait_for()
    link = row.locator("a")
    assert await link.count() == 1
    assert await link.get_attribute("href") == "https://example.org/a?b=1"
    assert await link.get_attribute("rel") == "noopener noreferrer"
    assert await link.inner_text() == "https://example.org/a?b=1"
    mention = row.locator(f".mention[data-mention='{bob.user.name}']")
    assert await mention.inner_text() == f"@{bob.user.name}"
    assert await row.locator(".mention").count() == 1, "only members are mentions"
    assert "javascript:alert(1)" in await row.locator(".body").inner_text()

    # Bob's badge stands out for the mention (Carol's plain message adds none) ...
    item = f"#conversations li[data-conversation-id='{group}']"
    badge = b.locator(f"{item} .badge")
    await b.locator(f"{item} .badge[data-unread='2']").wait_for()
    assert await badge.get_attribute("data-mentions") == "1"
    # ... and an edit (the conversation's last event now) is no new unread message.
    await box.press("ArrowUp")
    await box.press("End")
    await box.press_sequentially(" (edited)")
    await box.press("Enter")
    await b.locator(f"{item} .preview", has_text="(edited)").wait_for()
    assert await badge.get_attribute("data-unread") == "2"
    assert await badge.get_attribute("data-mentions") == "1"
    await bob.open_conversation(b, group)
    mine = b.locator("#messages .mention-me")
    await mine.wait_for()
    assert await mine.inner_text() == f"@{bob.user.name}"
    read = b.locator(f"{item} .badge[hidden][data-unread='0']")
    await read.wait_for(state="attached")  # read up to the edit: nothing left unread
    assert await badge.get_attribute("data-mentions") is None
    await shot(b, artifacts, "21-mention-bob")
