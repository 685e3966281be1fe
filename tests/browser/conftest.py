"""Browser tests: Playwright driving Debian's Chromium against the session stack's nginx.

One browser for the session, a context per person (separate storage = separate user). Every
page fails its test on a console error, an uncaught page error or a failed request, unless the
test says that error is expected. Screenshots go to a temporary directory (printed at the end).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from chatd.devstack import Stack
from tests.helpers import Api, User

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: ./scripts/bootstrap installs Debian's chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        await browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(tempfile.mkdtemp(prefix="chatd-web-artifacts-"))
    print(f"\nbrowser test screenshots: {path}")
    return path


class Person:
    """One user in their own browser context; `page` is their first tab."""

    def __init__(self, context: BrowserContext, base_url: str, user: User | None) -> None:
        self.context = context
        self.base_url = base_url
        self.user = user
        self.errors: list[str] = []
        self.expected: list[re.Pattern[str]] = []
        self.pages: list[Page] = []

    @property
    def page(self) -> Page:
        return self.pages[0]

    def expect_errors(self, pattern: str) -> None:
        """Errors matching `pattern` (a regex) are part of the scenario, not failures."""
        self.expected.append(re.compile(pattern))

    def _record(self, what: str) -> None:
        if not any(p.search(what) for p in self.expected):
            self.errors.append(what)

    async def new_page(self) -> Page:
        page = await self.context.new_page()
        page.on("console", lambda m: self._record(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self._record(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self._record(f"requestfailed: {r.method} {r.url} {r.failure}"))
        self.pages.append(page)
        return page

    async def open_app(self) -> Page:
        """A new tab with the app; logged in as `user` (its context starts with the token the app
        stores at login)."""
        page = await self.new_page()
        await page.goto(self.base_url + "/")
        if self.user is not None:
            await page.locator("#link[data-connection='online']").wait_for()
        return page

    def conversation(self, page: Page, cid: int) -> str:
        return f"#conversations li[data-conversation-id='{cid}']"

    async def open_conversation(self, page: Page, cid: int) -> None:
        await page.locator(f"{self.conversation(page, cid)} button").click()
        await page.locator(f"#thread-body[data-conversation-id='{cid}']").wait_for()

    async def send(self, page: Page, text: str) -> None:
        await page.locator("#composer-input").fill(text)
        await page.locator("#composer-input").press("Enter")


PersonFactory = Callable[..., Awaitable[Person]]


@pytest.fixture
async def people(browser: Browser, stack: Stack, nginx: Api) -> AsyncIterator[PersonFactory]:
    made: list[Person] = []

    async def make(
        prefix: str = "w", user: User | None = None, register: bool = True, **options: object
    ) -> Person:
        if user is None and register:
            user = await nginx.user(prefix)
        if user is not None:
            token = {"name": "chatd.token", "value": user.token}
            options.setdefault("storage_state", {"origins": [{"origin": stack.url, "localStorage": [token]}]})
        context = await browser.new_context(**options)  # type: ignore[arg-type]
        person = Person(context, stack.url, user)
        made.append(person)
        return person

    yield make
    errors = [f"{p.user.name if p.user else '?'}: {e}" for p in made for e in p.errors]
    for person in made:
        await person.context.close()
    assert not errors, "browser errors:\n" + "\n".join(errors)


async def shot(page: Page, artifacts: Path, name: str) -> None:
    await page.screenshot(path=str(artifacts / f"{name}.png"))
