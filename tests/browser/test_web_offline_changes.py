"""Edits and deletes made without a network are not lost: like sends, they wait in the outbox,
shown pending, go out in the order they were made once the network is back, and a refusal
(the message was deleted meanwhile, say) is shown on the message."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.async_api import Locator, Page

from tests.browser.conftest import Person, PersonFactory, shot
from tests.helpers import Api, Ws

OFFLINE_ERRORS = r"WebSocket connection to .* failed|net::ERR_INTERNET_DISCONNECTED"


def row(page: Page, seq: int, marks: str = "", has_text: str | None = None) -> Locator:
    """The row of the message at `seq`; `marks`: more of the selector, e.g. "[data-state='pending']"."""
    return page.locator(f"#messages li.message[data-seq='{seq}']{marks}", has_text=has_text)


async def stored(page: Page, seq: int) -> None:
    """My message at `seq` as the app holds it once stored: its own event is in (its ack, which
    gives the row its seq, may come first, protocol.md §4.3), and with it the row's menu. Only
    then can it be edited or deleted, and not while offline if the event had not come yet."""
    await row(page, seq).get_by_role("button", name="Message actions").wait_for()


async def edit(person: Person, page: Page, seq: int, before: str, after: str) -> None:
    """Edit the message at `seq` from its menu."""
    await row(page, seq).get_by_role("button", name="Message actions").click()
    await row(page, seq).locator(".edit-button").click()
    box = page.locator("#composer-input")
    assert await box.input_value() == before
    await box.fill(after)
    await box.press("Enter")


async def delete(page: Page, seq: int) -> None:
    await row(page, seq).get_by_role("button", name="Message actions").click()
    await row(page, seq).locator(".delete-button").click()
    await row(page, seq).locator(".confirm-delete").click()


async def test_edits_and_deletes_made_offline_are_stored_on_reconnect(
    people: PersonFactory, nginx: Api, artifacts: Path
) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    alice.expect_errors(OFFLINE_ERRORS)
    cid = await nginx.direct(alice.user, bob.user)
    a, b = await alice.open_app(), await bob.open_app()
    await alice.open_conversation(a, cid)
    await bob.open_conversation(b, cid)
    await alice.send(a, "meet at teh station")
    await alice.send(a, "wrong chat, sorry")
    await row(b, 2).wait_for()
    await stored(a, 1)
    await stored(a, 2)

    await alice.context.set_offline(True)
    try:
        await a.locator("#link[data-connection='offline']").wait_for()
        await edit(alice, a, 1, "meet at teh station", "meet at the station")
        await row(a, 1, ".mine[data-state='pending']", "at the station").wait_for()
        assert await a.locator("#composer-input").input_value() == ""
        await delete(a, 2)
        await row(a, 2, ".mine[data-state='pending']").wait_for()
        # The sidebar's preview of the last message says so too, not its stored text.
        await a.locator(f"{alice.conversation(a, cid)} .preview", has_text="You: message deleted").wait_for()
        # A sentinel typed after both: once it is stored, the changes before it were handled.
        await alice.send(a, "typed after the changes")
        await a.locator(
            "#messages li.mine[data-state='pending']", has_text="typed after the changes"
        ).wait_for()
        assert await a.locator("#composer-error").inner_text() == ""
        await shot(a, artifacts, "offline-changes-pending")
    finally:
        await alice.context.set_offline(False)

    await a.locator("#link[data-connection='online']").wait_for()
    await (
        a.locator("#messages li.mine[data-state]", has_text="typed after the changes")
        .and_(a.locator(":not([data-state='pending'])"))
        .wait_for()
    )
    # Bob, live: the edit, the tombstone and the sentinel.
    await row(b, 1, ".theirs[data-edited='true']", "meet at the station").wait_for()
    await row(b, 2, ".theirs[data-deleted='true']").wait_for()
    await b.locator("#messages li.theirs .body", has_text="typed after the changes").wait_for()
    assert await b.locator("#messages .body", has_text="wrong chat").count() == 0
    # Stored once each, in the order they were made (the sentinel after both).
    history = await nginx.history(bob.user, cid)
    assert [(m["seq"], m["kind"], m.get("ref_seq")) for m in history] == [
        (1, "text", None),
        (2, "text", None),
        (3, "edit", 1),
        (4, "delete", 2),
        (5, "text", None),
    ]
    assert history[0]["body"] == "meet at the station" and history[0].get("edited_at")
    assert history[1]["body"] == "" and history[1].get("deleted_at")
    # Alice's rows show what is stored, nothing pending any more, and nothing is left queued.
    await row(a, 1, ".mine[data-edited='true']:not([data-state='pending'])").wait_for()
    await row(a, 2, ".mine[data-deleted='true']:not([data-state='pending'])").wait_for()
    queued = await a.evaluate("Object.keys(localStorage).filter(k => k.startsWith('chatd.outbox.'))")
    assert queued == []
    await shot(b, artifacts, "offline-changes-bob")


async def test_an_offline_edit_refused_on_reconnect_is_shown(
    people: PersonFactory, nginx: Api, artifacts: Path
) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    alice.expect_errors(OFFLINE_ERRORS)
    cid = await nginx.direct(alice.user, bob.user)
    a = await alice.open_app()
    await alice.open_conversation(a, cid)
    await alice.send(a, "first version")
    await stored(a, 1)

    await alice.context.set_offline(True)
    try:
        await a.locator("#link[data-connection='offline']").wait_for()
        await edit(alice, a, 1, "first version", "second version")
        await row(a, 1, ".mine[data-state='pending']", "second version").wait_for()
        # Meanwhile Alice's other device deletes that message.
        other = await Ws.connect(nginx.base_url, alice.user.token)
        cmid = uuid.uuid4().hex
        await other.send_json(
            {"type": "delete", "id": "d", "conversation_id": cid, "client_msg_id": cmid, "seq": 1}
        )
        assert (await other.expect(lambda f: f.get("ref") == "d"))["type"] == "ack"
        await other.close()
    finally:
        await alice.context.set_offline(False)

    await a.locator("#link[data-connection='online']").wait_for()
    refused = row(a, 1, ".mine[data-state='failed']")
    await refused.wait_for()
    assert await refused.get_attribute("data-deleted") == "true"
    status = await refused.locator(".status").inner_text()
    assert status.startswith("Not edited:") and "deleted" in status, status
    assert await refused.locator(".status").get_attribute("role") == "alert"
    await shot(a, artifacts, "offline-edit-refused")
    history = await nginx.history(bob.user, cid)
    assert [(m["seq"], m["kind"]) for m in history] == [(1, "text"), (2, "delete")]
    # Dismissed, the row is the tombstone it is.
    await refused.get_by_role("button", name="Dismiss").click()
    await row(a, 1, ".mine[data-deleted='true']:not([data-state='failed'])").wait_for()
