"""Accessibility checked by axe-core (issue 19, item 8): no serious or critical violation on the
app's main screens (login, list, thread, members panel), wide and light, narrow and dark.

axe-core is an npm dev dependency of web/ (`npm ci` in ./scripts/bootstrap); its script is run
in the page through the DevTools protocol, which the app's strict CSP does not apply to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from tests.browser.conftest import PersonFactory, shot
from tests.helpers import Api, Ws

AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"
WIDE_LIGHT = {"viewport": {"width": 1280, "height": 800}, "color_scheme": "light"}
NARROW_DARK = {"viewport": {"width": 360, "height": 740}, "color_scheme": "dark"}
# label-content-name-mismatch is one of axe's "experimental" rules, off unless asked for.
RUN = """async () => (await axe.run(document, {
  rules: {'label-content-name-mismatch': {enabled: true}},
  resultTypes: ['violations'],
})).violations
  .filter(v => v.impact === 'serious' || v.impact === 'critical')
  .map(v => ({id: v.id, impact: v.impact, help: v.help,
              nodes: v.nodes.slice(0, 5).map(n => n.html.slice(0, 160) + ' ' + n.failureSummary)}))"""


async def violations(page: Page, screen: str) -> list[str]:
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text())
    found: list[dict[str, Any]] = await page.evaluate(RUN)
    lines = "\n    ".join
    return [f"{screen}: {v['id']} ({v['impact']}) {v['help']}\n    " + lines(v["nodes"]) for v in found]


@pytest.mark.parametrize("options", [WIDE_LIGHT, NARROW_DARK], ids=["wide-light", "narrow-dark"])
async def test_no_serious_violations(
    people: PersonFactory, nginx: Api, artifacts: Path, options: dict[str, Any]
) -> None:
    assert AXE.exists(), f"{AXE} is missing: run ./scripts/bootstrap (npm ci in web/)"
    narrow = options["viewport"]["width"] < 700
    found: list[str] = []

    visitor = await people(register=False, **options)
    login = await visitor.open_app()
    await login.locator("#login:not([hidden])").wait_for()
    found += await violations(login, "login")
    visitor.expect_errors(r"status of 401")
    await login.get_by_label("Username", exact=True).fill("nobody-here")
    await login.get_by_label("Password", exact=True).fill("not the password")
    await login.get_by_role("button", name="Log in").click()
    await login.locator("#login-error", has_text="Wrong username or password").wait_for()
    found += await violations(login, "login, refused")

    alice, bob, carol = await people("alice", **options), await people("bob"), await people("carol")
    assert alice.user and bob.user and carol.user
    direct = await nginx.direct(alice.user, bob.user)
    group = await nginx.group(alice.user, [bob.user, carol.user], "planning")
    ws = await Ws.connect(nginx.base_url, bob.user.token)
    for cid in (direct, group):
        assert (await ws.send(cid, "a message to read"))["type"] == "ack"
    a = await alice.open_app()
    await a.locator(f"{alice.conversation(a, direct)} .badge[data-unread='1']").wait_for()
    found += await violations(a, "list")  # unread badges, presence dots, previews

    await alice.open_conversation(a, group)
    await alice.send(a, "mine, saved")
    await a.locator("#messages li.mine[data-state='saved']").wait_for()
    assert (await ws.read(group, 2))["type"] == "read_state"  # a "Read by 1 of 2" count
    await a.locator("#messages li.mine[data-read-by='1']").wait_for()
    await alice.context.set_offline(True)
    try:
        await alice.send(a, "mine, pending")
        await a.locator("#messages li.mine[data-state='pending']").wait_for()
        found += await violations(a, "thread, offline, with a pending message")
    finally:
        await alice.context.set_offline(False)
    await a.locator("#link[data-connection='online']").wait_for()
    await a.locator("#members-toggle").click()
    await a.locator(f"#member-list li[data-user-id='{bob.user.id}']").wait_for()
    found += await violations(a, "members panel")
    await shot(a, artifacts, f"axe-{'narrow-dark' if narrow else 'wide-light'}")

    if narrow:
        await a.locator("#back").click()
    await alice.open_conversation(a, direct)
    await a.locator("#messages li.message").first.wait_for()
    await a.locator("#composer-input").fill("x" * 4001)
    await a.locator("#composer-input").press("Enter")
    await a.locator("#composer-count[data-over='true']").wait_for()
    found += await violations(a, "direct thread, an over-long message typed")
    await ws.close()
    assert not found, "axe: serious or critical violations\n" + "\n".join(found)
