"""Scenario 3: receipts made visible. "Read" in 1:1 once the peer has the message on screen;
"read by K of N" live in a group; a second tab clears its badge without reload; a reload never
shows a badge higher than the true count."""

from __future__ import annotations

from pathlib import Path

from tests.browser.conftest import PersonFactory, shot
from tests.helpers import Api, Ws

# Records every value any unread badge takes from the first paint on (an init script runs
# before the app on each load), so a transient over-count cannot slip between two polls.
BADGE_WATCH = """
window.badgeValues = [];
new MutationObserver(() => {
  for (const badge of document.querySelectorAll('#conversations .badge')) {
    const cid = badge.closest('li').dataset.conversationId;
    if (!badge.hidden) window.badgeValues.push([Number(cid), Number(badge.dataset.unread)]);
  }
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""


async def test_read_in_direct_conversation(people: PersonFactory, nginx: Api, artifacts: Path) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    await nginx.direct(bob.user, alice.user)  # Bob opens it too: only then are his reads shown (§4.9)
    a, b = await alice.open_app(), await bob.open_app()
    await alice.open_conversation(a, cid)
    await bob.open_conversation(b, cid)
    await alice.send(a, "did you see this")
    await b.locator("#messages .body", has_text="did you see this").wait_for()
    mine = a.locator("#messages li.mine", has_text="did you see this")
    await a.locator("#messages li.mine[data-state='read']", has_text="did you see this").wait_for()
    assert await mine.locator(".status").inner_text() == "Read"
    await shot(a, artifacts, "3-direct-read")


async def test_read_shown_is_the_peers_own(people: PersonFactory, nginx: Api) -> None:
    """My message shows "Read" when the peer read it, not when I read a later one of theirs: the
    counts of the peer's own messages in a history page count my reads, not theirs."""
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    await nginx.direct(bob.user, alice.user)  # Bob opened it too: his reads would be shown (§4.9)
    phone = await Ws.connect(nginx.base_url, alice.user.token)
    peer = await Ws.connect(nginx.base_url, bob.user.token)
    assert (await phone.send(cid, "are we still on for friday"))["seq"] == 1
    assert (await peer.send(cid, "sent before reading yours"))["seq"] == 2  # Bob never read seq 1
    assert (await phone.read(cid, 2))["type"] == "read_state"  # Alice read his, on her phone
    a = await alice.open_app()
    await alice.open_conversation(a, cid)
    row = a.locator("#messages li.mine", has_text="are we still on for friday")
    # The row comes with the history page, its state from that page's counts.
    await row.wait_for()
    assert await row.get_attribute("data-state") == "saved"
    assert await row.locator(".status").inner_text() == "Saved"
    assert await row.get_attribute("data-delivered") == "0"
    # Bob reads it: now it says so, live.
    assert (await peer.read(cid, 1))["type"] == "read_state"
    await row.and_(a.locator("[data-state='read']")).wait_for()
    assert await row.locator(".status").inner_text() == "Read"
    await phone.close()
    await peer.close()


async def test_group_counts_second_tab_and_reload(people: PersonFactory, nginx: Api, artifacts: Path) -> None:
    alice, bob, carol = await people("alice"), await people("bob"), await people("carol")
    assert alice.user and bob.user and carol.user
    group = await nginx.group(alice.user, [bob.user, carol.user], title="receipts")
    # Bob and Carol take part (§4.9: reads count only then); Carol has read everything so far.
    for user in (bob.user, carol.user):
        ws = await Ws.connect(nginx.base_url, user.token)
        ack = await ws.send(group, f"hello from {user.name}")
        assert ack["type"] == "ack", ack
        if user is carol.user:
            await ws.read(group, ack["seq"])
        await ws.close()
    a = await alice.open_app()
    b = await bob.open_app()
    c1, c2 = await carol.open_app(), await carol.open_app()
    await alice.open_conversation(a, group)
    await alice.send(a, "read by whom")
    row = a.locator("#messages li.mine", has_text="read by whom")
    await row.and_(a.locator("[data-state='saved']")).wait_for()
    for tab in (c1, c2):
        await tab.locator(f"{carol.conversation(tab, group)} .badge[data-unread='1']").wait_for()

    await bob.open_conversation(b, group)
    await a.locator("#messages li[data-read-by='1'][data-read-of='2']", has_text="read by whom").wait_for()
    assert await row.locator(".status").inner_text() == "Read by 1 of 2"

    await carol.open_conversation(c1, group)
    await a.locator("#messages li[data-read-by='2'][data-read-of='2']", has_text="read by whom").wait_for()
    assert await row.get_attribute("data-state") == "read"
    # Carol's other tab learns her pointer moved (read_state) and clears the badge, no reload.
    await c2.locator(f"{carol.conversation(c2, group)} .badge[hidden][data-unread='0']").wait_for(
        state="attached"
    )
    # Who read it (the group is small enough for the server to keep the list).
    await row.locator(".readers-button").click()
    readers = await row.locator(".readers").get_attribute("data-readers")
    assert sorted((readers or "").split(",")) == sorted([bob.user.name, carol.user.name])
    await shot(a, artifacts, "3-group-read-by")

    # Bob has two unread messages in a direct conversation he is not looking at.
    direct = await nginx.direct(alice.user, bob.user)
    await b.locator(carol.conversation(b, direct)).wait_for()
    for text in ("one", "two"):
        await alice.open_conversation(a, direct) if text == "one" else None
        await alice.send(a, text)
    await b.locator(f"{bob.conversation(b, direct)} .badge[data-unread='2']").wait_for()
    true_count = await nginx.call("GET", "/v1/me/read_state", bob.user.token)
    assert {e["conversation_id"]: e["unread"] for e in true_count.json()["conversations"]}[direct] == 2

    await bob.context.add_init_script(BADGE_WATCH)
    await b.reload()
    await b.locator("#link[data-connection='online']").wait_for()
    await b.locator(f"{bob.conversation(b, direct)} .badge[data-unread='2']").wait_for()
    values = [n for cid, n in await b.evaluate("window.badgeValues") if cid == direct]
    assert values and max(values) <= 2, values
    await shot(b, artifacts, "3-badge-after-reload")
