"""Issue 22 in the browser: the unread count in the tab's title and favicon, desktop
notifications only when the tab is not looked at (collapsed per conversation, never for muted
conversations or my own messages, a click opens the conversation), and Web Push: the service
worker registers and this device's subscription reaches the server.

Headless Chromium here cannot hide a tab (another tab in front leaves it "visible") and cannot
get a push subscription (its push service is not reachable: `subscribe` fails with
AbortError), so an init script lets the test say whether the tab is looked at, records the
Notification API's calls (the real API still runs, with the permission granted to the
context), and stands in for the browser vendor's push service with a subscription whose
endpoint is the test's own push service (tests/pushserver.py)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page

from chatd.devstack import Stack
from tests.browser.conftest import Person, PersonFactory
from tests.helpers import Api, Ws
from tests.pushserver import PushServer, unattended

LOOKING = """
window.__hidden = false;
Object.defineProperty(Document.prototype, "visibilityState", {
  configurable: true, get() { return window.__hidden ? "hidden" : "visible"; } });
Object.defineProperty(Document.prototype, "hidden", {
  configurable: true, get() { return window.__hidden; } });
Document.prototype.hasFocus = function () { return !window.__hidden; };
window.__notes = [];
const RealNotification = window.Notification;
class RecordedNotification extends RealNotification {
  constructor(title, options = {}) {
    super(title, options);
    window.__notes.push(this);
  }
}
Object.defineProperty(RecordedNotification, "permission", { get: () => RealNotification.permission });
RecordedNotification.requestPermission = (...args) => RealNotification.requestPermission(...args);
window.Notification = RecordedNotification;
"""

VENDOR = """
(() => {
  const [sub, stale] = %s;  // stale: a subscription this browser kept, made for another key
  const subscription = (json, key) => {
    const made = { endpoint: json.endpoint, toJSON: () => json,
                   options: { userVisibleOnly: true, applicationServerKey: new Uint8Array(key).buffer },
                   unsubscribe: async () => {
                     window.__unsubscribed.push(json.endpoint);
                     current = null;
                     return true;
                   } };
    return made;
  };
  window.__unsubscribed = [];
  let current = stale ? subscription(stale.json, stale.key) : null;
  PushManager.prototype.getSubscription = async function () { return current; };
  PushManager.prototype.subscribe = async function (options) {
    window.__asked = { userVisibleOnly: options.userVisibleOnly,
                       key: Array.from(new Uint8Array(options.applicationServerKey)) };
    current = subscription(sub, options.applicationServerKey);
    return current;
  };
})();
"""


@pytest.fixture
async def pushsvc() -> AsyncIterator[PushServer]:
    server = PushServer()
    await server.start()
    yield server
    await server.close()


async def until(page: Page, expression: str, timeout: float = 10) -> None:
    """Wait until `expression` is true in the page (polled with evaluate: the app's CSP forbids
    the eval that wait_for_function needs)."""
    async with asyncio.timeout(timeout):
        while not await page.evaluate(expression):  # noqa: ASYNC110  the page is elsewhere
            await asyncio.sleep(0.05)


async def notes(page: Page) -> list[dict[str, str]]:
    found: list[dict[str, str]] = await page.evaluate(
        "window.__notes.map((n) => ({title: n.title, body: n.body, tag: n.tag}))"
    )
    return found


async def person_with_notifications(people: PersonFactory, name: str) -> Person:
    person = await people(name)
    await person.context.grant_permissions(["notifications"], origin=person.base_url)
    await person.context.add_init_script(LOOKING)
    return person


async def test_title_and_favicon_count_unread(people: PersonFactory, nginx: Api) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    page = await bob.open_app()
    await page.locator(bob.conversation(page, cid)).wait_for()
    assert await page.title() == "chatd"
    a = await Ws.connect(nginx.base_url, alice.user.token)
    for i in range(3):
        assert (await a.send(cid, f"unread {i}"))["type"] == "ack"
    await until(page, "document.title === '(3) chatd'")
    assert await page.locator("link[rel='icon']").get_attribute("href") == "/web/icon-unread.svg"
    await bob.open_conversation(page, cid)  # read on screen: the count goes
    await until(page, "document.title === 'chatd'")
    assert await page.locator("link[rel='icon']").get_attribute("href") == "/web/icon.svg"
    await a.close()


async def test_desktop_notifications_only_when_not_looking(people: PersonFactory, nginx: Api) -> None:
    alice = await people("alice")
    bob = await person_with_notifications(people, "bob")
    # A Playwright context is like an incognito window: Chromium has no Push API there, and
    # says so when the app (permission granted) looks for its subscription.
    bob.expect_errors("does not support the Push API in incognito mode")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    group = await nginx.group(alice.user, [bob.user], "later")
    page = await bob.open_app()
    await page.locator(bob.conversation(page, group)).wait_for()
    a = await Ws.connect(nginx.base_url, alice.user.token)
    row = page.locator(bob.conversation(page, cid))
    # Looking at the tab: nothing.
    await a.send(cid, "while you look")
    await row.locator(".preview", has_text="while you look").wait_for()
    assert await notes(page) == []
    # Hidden: one notification per conversation, the later one replacing the first.
    await page.evaluate("window.__hidden = true")
    await a.send(cid, "while you are away")
    await until(page, "window.__notes.length === 1")
    await a.send(cid, "and again")
    await until(page, "window.__notes.length === 2")
    assert await notes(page) == [
        {"title": "chatd", "body": f"New message from {alice.user.name}", "tag": f"chatd-c-{cid}"},
        {"title": "chatd", "body": "2 new messages", "tag": f"chatd-c-{cid}"},
    ]
    # My own message from another device, and a conversation muted on another device: nothing.
    phone = await Ws.connect(nginx.base_url, bob.user.token)
    assert (await phone.send(cid, "from my phone"))["type"] == "ack"
    muted = await nginx.call("PUT", f"/v1/conversations/{cid}/mute", bob.user.token, {"muted": True})
    assert muted.status_code == 200
    await row.locator(".preview", has_text="from my phone").wait_for()
    await page.locator(f"{bob.conversation(page, cid)}[data-muted='true']").wait_for()  # synced
    await a.send(cid, "muted now")
    await row.locator(".preview", has_text="muted now").wait_for()
    await a.send(group, "in the group")  # barrier: the next notification is this one
    await until(page, "window.__notes.length === 3")
    assert (await notes(page))[2] == {
        "title": "chatd",
        "body": f"New message from {alice.user.name}",
        "tag": f"chatd-c-{group}",
    }
    # A click opens that conversation.
    await page.evaluate("window.__hidden = false; window.__notes[2].onclick()")
    await page.locator(f"#thread-body[data-conversation-id='{group}']").wait_for()
    assert await page.locator("#mute-toggle").inner_text() == "Mute"
    await bob.open_conversation(page, cid)
    assert await page.locator("#mute-toggle").get_attribute("aria-pressed") == "true"
    for ws in (a, phone):
        await ws.close()


async def test_service_worker_and_subscription_reach_the_server(
    people: PersonFactory, nginx: Api, stack: Stack, pushsvc: PushServer
) -> None:
    alice = await people("alice")
    bob = await person_with_notifications(people, "bob")
    assert alice.user and bob.user
    sub = pushsvc.subscription("/browser")
    await bob.context.add_init_script(VENDOR % json.dumps([sub.json(), None]))
    cid = await nginx.direct(alice.user, bob.user)
    page = await bob.open_app()
    scope = await page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
    assert scope == nginx.base_url + "/"
    await page.locator("#alerts-toggle").click()
    assert await page.locator("#alerts-state").inner_text() == "Notifications are on for this browser."
    # Permission was granted before: the app subscribed at start; turning it on again is the
    # same subscription, sent again.
    await until(page, "window.__asked !== undefined")
    key = (await nginx.call("GET", "/v1/push/key")).json()["public_key"]
    asked = await page.evaluate("window.__asked")
    assert bytes(asked["key"]) == base64.urlsafe_b64decode(key + "==")
    assert asked["userVisibleOnly"] is True
    listed: list[dict[str, object]] = []
    for _ in range(100):
        listed = (await nginx.call("GET", "/v1/push/subscriptions", bob.user.token)).json()["subscriptions"]
        if listed:
            break
        await page.wait_for_timeout(50)
    assert [(s["endpoint"], s["this_device"]) for s in listed] == [(sub.endpoint, True)]
    # No tab open: a message is pushed there, readable with the subscription's key.
    await page.close()
    await unattended(stack.redis_url, bob.user.id)
    a = await Ws.connect(nginx.base_url, alice.user.token)
    assert (await a.send(cid, "are you there"))["type"] == "ack"
    [received] = await pushsvc.wait("/browser")
    assert sub.decrypt(received)["sender"] == alice.user.name
    await a.close()


async def test_a_subscription_for_another_vapid_key_is_replaced(
    people: PersonFactory, nginx: Api, pushsvc: PushServer
) -> None:
    """After the operator rotated the VAPID key, the browser's old subscription can no longer
    be pushed to: the app drops it and subscribes with the server's key."""
    bob = await person_with_notifications(people, "bob")
    assert bob.user
    sub, stale = pushsvc.subscription("/fresh"), pushsvc.subscription("/stale")
    other_key = list(range(1, 66))
    await bob.context.add_init_script(
        VENDOR % json.dumps([sub.json(), {"json": stale.json(), "key": other_key}])
    )
    page = await bob.open_app()
    await until(page, "window.__asked !== undefined")
    assert await page.evaluate("window.__unsubscribed") == [stale.endpoint]
    listed: list[dict[str, object]] = []
    for _ in range(100):
        listed = (await nginx.call("GET", "/v1/push/subscriptions", bob.user.token)).json()["subscriptions"]
        if listed:
            break
        await page.wait_for_timeout(50)
    assert [s["endpoint"] for s in listed] == [sub.endpoint]
