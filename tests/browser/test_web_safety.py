"""Scenario 6: a message body with HTML and script renders as text; the app's security headers
(CSP and the rest); another origin is refused unless CHATD_ALLOWED_ORIGINS lists it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page

from chatd.devstack import Stack
from tests.browser.conftest import PersonFactory, shot
from tests.helpers import Api

HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script><b>bold</b>'

# Run in a page of another origin: log in to `base` and open a WebSocket there, over CORS.
CROSS_ORIGIN = """async ([base, username]) => {
  const out = {};
  try {
    const r = await fetch(base + '/v1/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({username, password: 'correct horse battery'})});
    out.login = r.status;
    out.token = (await r.json()).token;
  } catch (e) { out.login = 'blocked'; }
  out.ws = await new Promise((resolve) => {
    const ws = new WebSocket(base.replace('http', 'ws') + '/v1/ws');
    ws.onopen = () => ws.send(JSON.stringify({type: 'auth', token: out.token || 'x'}));
    ws.onmessage = (e) => { resolve(JSON.parse(e.data).type); ws.close(); };
    ws.onclose = (e) => resolve('closed ' + e.code);
  });
  return out;
}"""


class OtherSite(BaseHTTPRequestHandler):
    """Another web app's origin: a blank page (and an empty icon) from another loopback port.
    It has to be a real loopback server: Chromium refuses requests from public pages to
    loopback (Local Network Access) before CORS is even considered."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>other</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if self.path == "/" else "image/x-icon")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def other_origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OtherSite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_html_in_a_message_is_text(people: PersonFactory, nginx: Api, artifacts: Path) -> None:
    alice, bob = await people("alice"), await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    a, b = await alice.open_app(), await bob.open_app()
    await alice.open_conversation(a, cid)
    await bob.open_conversation(b, cid)
    await alice.send(a, HOSTILE)
    body = b.locator("#messages li.theirs .body").last
    await body.wait_for()
    assert await body.text_content() == HOSTILE
    assert await b.locator("#messages img, #messages script, #messages b").count() == 0
    assert await b.evaluate("window.pwned") is None
    await shot(b, artifacts, "6-html-as-text")


async def test_security_headers(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        index = await http.get("/")
        module = await http.get("/web/js/main.js")
        again = await http.get("/web/js/main.js", headers={"If-None-Match": module.headers["etag"]})
    assert index.status_code == 200 and '<script type="module"' in index.text
    csp = index.headers["content-security-policy"]
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp
    for response in (index, module):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-cache"
    assert module.headers["content-type"].startswith("text/javascript")
    assert again.status_code == 304  # revalidated by ETag, not downloaded again


async def test_compressed_and_still_revalidated(stack: Stack) -> None:
    """HTML, JS and CSS are sent gzipped to a browser that accepts it (issue 19, item 10), and
    revalidation by ETag still answers 304."""
    async with httpx.AsyncClient(base_url=stack.url) as http:
        for path in ("/", "/web/js/main.js", "/web/app.css", "/web/js/view/thread.js"):
            plain = await http.get(path, headers={"Accept-Encoding": "identity"})
            packed = await http.get(path, headers={"Accept-Encoding": "gzip, deflate, br"})
            assert "content-encoding" not in plain.headers
            assert packed.headers.get("content-encoding") == "gzip", (path, packed.headers)
            assert packed.content == plain.content  # httpx decodes it
            assert packed.num_bytes_downloaded < len(plain.content) / 2, path
            assert "accept-encoding" in packed.headers["vary"].lower()
            for etag in (plain.headers["etag"], packed.headers["etag"]):
                again = await http.get(path, headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
                assert again.status_code == 304, (path, etag)


async def test_other_origins(
    people: PersonFactory,
    nginx: Api,
    spawn_worker: Callable[..., Any],
    other_origin: str,
    artifacts: Path,
) -> None:
    """Refused by default (no CORS headers, WebSocket upgrade 403); allowed when listed."""
    person = await people("cors")
    assert person.user
    person.expect_errors(
        r"CORS policy|Failed to load resource: net::ERR_FAILED|WebSocket connection to .* failed"
    )
    person.expect_errors(r"requestfailed: POST .*/v1/login net::ERR_FAILED")
    page = await person.new_page()
    await page.goto(f"{other_origin}/")
    refused = await run(page, nginx.base_url, person.user.name)
    assert refused == {"login": "blocked", "ws": "closed 1006"}

    worker = spawn_worker(CHATD_ALLOWED_ORIGINS=f"https://another.example,{other_origin}")
    allowed = await run(page, worker.url, person.user.name)
    assert allowed["login"] == 200 and allowed["ws"] == "ready"
    await shot(page, artifacts, "6-other-origin")


async def run(page: Page, base: str, username: str) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(CROSS_ORIGIN, [base, username])
    result.pop("token", None)
    return result
