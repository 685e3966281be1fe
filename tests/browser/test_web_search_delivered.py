"""Search in the web app (a result opens the message in its context, scrolled into view and
highlighted; highlights are text, never markup) and delivery receipts shown to the sender."""

from __future__ import annotations

import random
import string
from pathlib import Path

import asyncpg

from tests.browser.conftest import PersonFactory, shot
from tests.helpers import Api, Ws, seed_history

IN_VIEW = """(li) => {
  const box = li.getBoundingClientRect(), view = document.querySelector('#scroller').getBoundingClientRect();
  return box.top >= view.top - 1 && box.bottom <= view.bottom + 1;
}"""


async def test_search_result_opens_the_message_scrolled_into_view_and_highlighted(
    people: PersonFactory, nginx: Api, db: asyncpg.Connection, artifacts: Path
) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    key = "zq" + "".join(random.choices(string.ascii_lowercase, k=10))
    bodies = [f"filler {n}" for n in range(150)]
    bodies[4] = f'the {key} decision <img src=x onerror="window.pwned=1"> was made'
    # 150 messages: the one searched for is three pages of history back from the newest.
    await seed_history(db, cid, alice.user.id, bodies, prefix=f"s-{key}-")
    b = await bob.open_app()
    await b.locator("#search-input").fill(f"{key} decisions")
    await b.locator("#search-input").press("Enter")
    result = b.locator(f"#search-list li[data-conversation-id='{cid}'][data-seq='5']")
    await result.wait_for()
    assert sorted(await result.locator("mark").all_inner_texts()) == sorted([key, "decision"])
    assert await b.locator("#search-list img").count() == 0  # the message's markup is text
    assert '<img src=x onerror="window.pwned=1">' in await result.inner_text()
    await result.locator("button").click()
    found = b.locator("#messages li.found[data-seq='5']")
    await found.wait_for()
    assert await found.locator(".body").inner_text() == bodies[4]
    await b.wait_for_function(
        "() => { const li = document.querySelector('#messages li.found'); return li && ("
        + IN_VIEW
        + ")(li); }"
    )
    assert await b.locator("#messages li.found").count() == 1
    assert await b.evaluate("() => window.pwned === undefined")
    await shot(b, artifacts, "search-jump")


async def test_sender_sees_delivered_then_read(people: PersonFactory, nginx: Api, artifacts: Path) -> None:
    alice, bob, carol = await people("alice"), await people("bob"), await people("carol")
    assert alice.user and bob.user and carol.user
    cid = await nginx.direct(alice.user, bob.user)
    await nginx.direct(bob.user, alice.user)  # bob opened it: his receipts are shown (§4.9)
    group = await nginx.group(alice.user, [bob.user, carol.user], title="delivered")
    for user in (bob.user, carol.user):  # they take part (§4.9)
        ws = await Ws.connect(nginx.base_url, user.token)
        assert (await ws.send(group, f"here, {user.name}"))["type"] == "ack"
        await ws.close()
    a = await alice.open_app()
    await alice.open_conversation(a, cid)
    await alice.send(a, "are you there")
    row = a.locator("#messages li.mine", has_text="are you there")
    await row.and_(a.locator("[data-state='saved'][data-delivered='0']")).wait_for()
    assert await row.locator(".status").inner_text() == "Saved"  # bob has no device connected

    # Bob's app is open on his conversation list, not on this conversation: his device gets the
    # next message (Delivered), he has not read it.
    b = await bob.open_app()
    await alice.send(a, "now you are")
    row = a.locator("#messages li.mine", has_text="now you are")
    await b.locator(f"{bob.conversation(b, cid)} .badge[data-unread='2']").wait_for()
    await row.and_(a.locator("[data-delivered='1']")).wait_for()
    assert await row.locator(".status").inner_text() == "Delivered"
    assert await row.get_attribute("data-state") == "saved"
    await shot(a, artifacts, "delivered-direct")
    await bob.open_conversation(b, cid)
    await row.and_(a.locator("[data-state='read']")).wait_for()
    assert await row.locator(".status").inner_text() == "Read"

    # The group: bob's app has it, carol has no device: delivered to 1 of 2, read by none.
    await alice.open_conversation(a, group)
    await alice.send(a, "to the group")
    grow = a.locator("#messages li.mine", has_text="to the group")
    await grow.and_(a.locator("[data-delivered='1'][data-read-by='0'][data-read-of='2']")).wait_for()
    assert await grow.locator(".status").inner_text() == "Read by 0 of 2"
    assert await grow.locator(".delivered").inner_text() == "· delivered to 1 of 2"
    await shot(a, artifacts, "delivered-group")
