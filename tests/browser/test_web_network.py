"""The connection status tells the truth (issue 19, item 4): the browser going offline shows at
once and recovers by itself, and a path that goes silent (nothing answers, nothing closes) is
noticed by the app's own liveness check within seconds, not at the next 30 s ping."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from chatd.devstack import Stack
from tests.browser.conftest import PersonFactory, shot
from tests.helpers import Api

# The app pings after 10 s of silence and gives up 5 s later (socket.js); the old app took 30 s
# to ping and 10 s more to notice.
NOTICED_WITHIN_MS = 25_000

WATCH_LINK = """() => { window.linkStates = [];
  const link = document.getElementById('link');
  new MutationObserver(() => window.linkStates.push(link.dataset.connection))
    .observe(link, {attributes: true, attributeFilter: ['data-connection']}); }"""


def nginx_pids(stack: Stack) -> list[int]:
    """The test stack's nginx: its master and worker processes (all started by this session)."""
    master = stack.pids["nginx"]
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [master, *map(int, children)]


@contextlib.contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """SIGSTOP: connections stay open, the kernel still acknowledges, nothing answers."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def test_offline_shows_at_once_and_recovers(people: PersonFactory, nginx: Api, artifacts: Path) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    alice.expect_errors(r"WebSocket connection to .* failed|net::ERR_INTERNET_DISCONNECTED")
    cid = await nginx.direct(alice.user, bob.user)
    a = await alice.open_app()
    await alice.open_conversation(a, cid)
    await alice.context.set_offline(True)
    try:
        await a.locator("#link:not([data-connection='online'])").wait_for(timeout=NOTICED_WITHIN_MS)
        assert await a.locator("#link").get_attribute("data-connection") == "offline"
        assert await a.locator("#link").inner_text() == "No network"
        await alice.send(a, "typed without a network")
        pending = a.locator("#messages li.mine[data-state='pending']", has_text="typed without a network")
        await pending.wait_for()
        await shot(a, artifacts, "network-offline")
    finally:
        await alice.context.set_offline(False)
    await a.locator("#link[data-connection='online']").wait_for()
    await (
        a.locator("#messages li.mine[data-state]", has_text="typed without a network")
        .and_(a.locator(":not([data-state='pending'])"))
        .wait_for()
    )
    history = await nginx.history(bob.user, cid)
    assert [m["body"] for m in history] == ["typed without a network"]


async def test_a_silent_path_is_noticed(people: PersonFactory, nginx: Api, stack: Stack) -> None:
    alice = await people("alice")
    alice.expect_errors(r"WebSocket connection to .* failed")
    a = await alice.open_app()
    await a.evaluate(WATCH_LINK)
    with frozen(nginx_pids(stack)):
        # Neither the browser nor the socket reports anything: only the app's ping can tell.
        await a.locator("#link:not([data-connection='online'])").wait_for(timeout=NOTICED_WITHIN_MS)
        assert await a.locator("#link").get_attribute("data-connection") in ("reconnecting", "connecting")
    await a.locator("#link[data-connection='online']").wait_for(timeout=60_000)
    assert "reconnecting" in await a.evaluate("window.linkStates")
