"""Files in Chromium: a pasted image reaches the other person as a thumbnail; an uploaded
HTML page, SVG or GIF/HTML polyglot never runs as a page on chatd's origin."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import pytest
from PIL import Image
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Route

from chatd.devstack import Stack
from tests.browser.conftest import PersonFactory, shot
from tests.browser.timing import best_of
from tests.helpers import Api, User

RECEIVE_WITHIN_MS = 1000  # issue 21: paste an image, the other person sees it within a second


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


async def test_pasted_image_reaches_the_other_person(
    people: PersonFactory, nginx: Api, artifacts: Path
) -> None:
    alice, bob = await people("wa"), await people("wb")
    assert alice.user is not None
    assert bob.user is not None
    cid = await nginx.direct(alice.user, bob.user)
    a, b = await alice.open_app(), await bob.open_app()
    await alice.open_conversation(a, cid)
    await bob.open_conversation(b, cid)
    picture = base64.b64encode(png(1200, 800)).decode()

    async def thumbnail(attempt: int) -> float:
        """Paste, send: ms until Bob's page shows the `attempt`-th thumbnail, loaded."""
        await b.evaluate(
            """(n) => { window.seenAt = null; window.seenN = n;
                if (window.seenWatch) return;
                window.seenWatch = () => {
                    const img = document.querySelectorAll('#messages img.thumb')[window.seenN];
                    const loaded = img && img.complete && img.naturalWidth > 0;
                    if (!window.seenAt && loaded) window.seenAt = Date.now();
                };
                new MutationObserver(window.seenWatch).observe(document.getElementById('messages'),
                    {childList: true, subtree: true, attributes: true});
                document.addEventListener('load', window.seenWatch, true); }""",
            attempt,
        )
        await a.evaluate(
            """(data) => {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], 'image.png', {type: 'image/png'}));
                document.getElementById('composer-input').dispatchEvent(
                    new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true, cancelable: true}));
            }""",
            picture,
        )
        await a.locator("#pending-files li[data-state='done']").wait_for()
        text = "the screenshot" if attempt == 0 else f"the screenshot, try {attempt + 1}"
        await a.locator("#composer-input").fill(text)
        sent_at: float = await a.evaluate("Date.now()")
        await a.locator("#composer-input").press("Enter")
        thumb = b.locator("#messages img.thumb").nth(attempt)
        await thumb.wait_for()
        # laid out at its final size before the bytes arrive: no jump
        assert await thumb.get_attribute("width") == "320"
        assert await thumb.get_attribute("height") == "213"
        await b.wait_for_function("() => window.seenAt !== null")
        seen_at: float = await b.evaluate("window.seenAt")
        assert await b.locator("#messages .body", has_text=text).count() == 1
        return seen_at - sent_at

    await best_of(thumbnail, RECEIVE_WITHIN_MS, "thumbnail shown after")
    # the lightbox shows the whole image
    await b.locator("#messages .thumb-button").first.click()
    await b.locator("#lightbox[open] #lightbox-image").wait_for()
    await b.wait_for_function("() => document.getElementById('lightbox-image').naturalWidth === 1200")
    await shot(b, artifacts, "files-lightbox-bob")
    await b.keyboard.press("Escape")
    await b.locator("#lightbox:not([open])").wait_for(state="attached")
    await shot(a, artifacts, "files-alice")


async def upload(nginx: Api, user: User, data: bytes, name: str) -> int:
    response = await nginx.call("POST", "/v1/files", user.token, params={"name": name}, content=data)
    assert response.status_code == 201, response.text
    file_id: int = response.json()["file"]["id"]
    return file_id


async def test_uploaded_pages_never_run(people: PersonFactory, nginx: Api, stack: Stack) -> None:
    owner = await nginx.user("wf")
    probe = f"{stack.url}/pwned"
    script = f"<script>document.title='pwned';fetch('{probe}-'+location.pathname)</script>"
    html = f"<!doctype html><html><body>hi{script}</body></html>".encode()
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" onload="fetch(\'' + probe + "-svg')\">"
        f"<script>fetch('{probe}-svg2')</script></svg>"
    ).encode()
    polyglot = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;" + html
    ids = {
        "html": await upload(nginx, owner, html, "page.html"),
        "svg": await upload(nginx, owner, svg, "drawing.svg"),
        "polyglot": await upload(nginx, owner, polyglot, "cat.gif"),
    }
    person = await people(user=owner, extra_http_headers={"Authorization": f"Bearer {owner.token}"})
    ran: list[str] = []
    probed = asyncio.Event()

    async def caught(route: Route) -> None:
        ran.append(route.request.url)
        probed.set()
        await route.fulfill(status=204)

    await person.context.route(f"{probe}*", caught)
    page = await person.new_page()
    # The probe works: the same page, loaded as a page, runs. (The script's fetch reaches the
    # route by another path than the title's poll: wait for the route itself.)
    await page.set_content(html.decode())
    await page.wait_for_function("() => document.title === 'pwned'")
    await asyncio.wait_for(probed.wait(), 30)
    assert len(ran) == 1, ran
    ran.clear()

    # a navigation that becomes a download is reported as an aborted request
    person.expect_errors(r"requestfailed: GET .*/v1/files/\d+ net::ERR_ABORTED")
    for kind in ("html", "svg"):
        # served as a download (Content-Disposition: attachment, text/plain): never a document
        async with page.expect_download() as download:
            with pytest.raises(PlaywrightError, match="Download is starting"):
                await page.goto(f"{stack.url}/v1/files/{ids[kind]}")
        assert (await download.value).suggested_filename in ("page.html", "drawing.svg")
    # an image, shown as one: the page after it loaded (its scripts would have run by then)
    response = await page.goto(f"{stack.url}/v1/files/{ids['polyglot']}")
    assert response is not None
    assert response.headers["content-type"] == "image/gif"
    assert await page.evaluate("document.contentType") == "image/gif"
    assert await page.evaluate("document.title") != "pwned"
    assert await page.evaluate("document.querySelectorAll('script').length") == 0
    # and the bytes framed as a page in chatd's own origin are refused too (frame-ancestors)
    await page.goto(f"{stack.url}/")
    frame_ok = await page.evaluate(
        """async (url) => { const r = await fetch(url); return r.headers.get('content-security-policy'); }""",
        f"/v1/files/{ids['html']}",
    )
    assert "sandbox" in frame_ok
    assert "frame-ancestors 'none'" in frame_ok
    assert ran == []
