"""The web app's weight and its history paging cost (issue 19, item 10).

1. First load: the bytes of the app's files (index.html, every module, the stylesheet, the
   icon) as nginx sends them, without and with gzip.
2. History: a direct conversation of `--messages` messages is opened in Chromium and scrolled
   back page by page ("Load older messages", 50 a page). For each page: the time from the
   page's last HTTP answer (its receipts) being read to the message list being updated
   (`script`: the app's code, rendering included, and the layout the scroll position needs),
   and to the next frame after it (`frame`: style, layout and paint too).

    .venv/bin/python -m bench.web_history [--messages 1000] [--web-root PATH] [--runs 3]

It starts its own local stack (`chatd.devstack`) in a temporary directory. To measure an older
app, extract its files and point at them: `git archive OLD web/app | tar -x -C /tmp/old` then
`--web-root /tmp/old/web/app`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets
from playwright.async_api import async_playwright

from chatd.devstack import Stack, web_root

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "bench-password-not-secret"  # noqa: S105
ENV = {
    "CHATD_LOG_LEVEL": "warning",
    "CHATD_REGISTRATION": "open",  # its user registers without an invite
    "CHATD_ARGON2_TIME_COST": "1",
    "CHATD_ARGON2_MEMORY_KIB": "1024",
    "CHATD_RATE_LIMIT_MESSAGES": "1000000",
}
# Stamps, in the page: when each receipts answer was read, and when the message list next
# changed and the frame after that was done.
INSTRUMENT = """() => {
  window.benchPages = [];
  const text = Response.prototype.text;
  Response.prototype.text = async function () {
    const body = await text.call(this);
    if (this.url.includes('/receipts')) window.benchPages.push({read: performance.now()});
    return body;
  };
  new MutationObserver(() => {
    const page = window.benchPages[window.benchPages.length - 1];
    if (!page || page.script) return;
    page.script = performance.now() - page.read;
    requestAnimationFrame(() => setTimeout(() => { page.frame = performance.now() - page.read; }, 0));
  }).observe(document.getElementById('messages'), {childList: true, subtree: true});
}"""


# Resolves once page `n`'s frame time is in (polled in the page: the CSP forbids the eval that
# Playwright's wait_for_function needs).
FRAME_DONE = """(n) => new Promise((done) => {
  const check = () => ((window.benchPages[n] || {}).frame ? done(true) : setTimeout(check, 10));
  check();
})"""


async def user(http: httpx.AsyncClient, prefix: str) -> dict[str, Any]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    assert (await http.post("/v1/register", json={"username": name, "password": PASSWORD})).status_code == 201
    login = await http.post("/v1/login", json={"username": name, "password": PASSWORD})
    return {"name": name, **login.json()}


async def fill(base: str, token: str, cid: int, count: int) -> None:
    """`count` messages from one connection, pipelined within the send window."""
    async with websockets.connect(base.replace("http://", "ws://") + "/v1/ws", max_size=2**24) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        while orjson.loads(await ws.recv())["type"] != "synced":
            pass
        acked = 0
        for start in range(0, count, 100):
            batch = range(start, min(count, start + 100))
            for i in batch:
                send = {
                    "type": "send",
                    "conversation_id": cid,
                    "client_msg_id": uuid.uuid4().hex,
                    "body": f"history message {i + 1} " + "words " * (i % 12),
                }
                await ws.send(orjson.dumps(send).decode())
            while acked < batch.stop:
                frame = orjson.loads(await ws.recv())
                assert frame["type"] != "error", frame
                acked += frame["type"] == "ack"


def app_files(root: Path) -> list[str]:
    """The paths a first load fetches: `/` (index.html) and everything under /web/."""
    found = [f"/web/{p.relative_to(root).as_posix()}" for p in sorted(root.rglob("*")) if p.is_file()]
    return ["/"] + [f for f in found if f != "/web/index.html"]


async def weight(base: str, files: list[str]) -> dict[str, int]:
    totals = {"files": len(files), "identity": 0, "gzip": 0}
    async with httpx.AsyncClient(base_url=base) as http:
        for path in files:
            for encoding in ("identity", "gzip"):
                response = await http.get(path, headers={"Accept-Encoding": encoding})
                assert response.status_code == 200, (path, response.status_code)
                totals[encoding] += response.num_bytes_downloaded
    return totals


async def history(base: str, alice: dict[str, Any], cid: int) -> list[dict[str, float]]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        token = {"name": "chatd.token", "value": alice["token"]}
        state = {"origins": [{"origin": base, "localStorage": [token]}]}
        context = await browser.new_context(storage_state=state)  # type: ignore[arg-type]
        page = await context.new_page()
        await page.goto(base + "/")
        await page.locator("#link[data-connection='online']").wait_for()
        await page.locator(f"#conversations li[data-conversation-id='{cid}'] button").click()
        await page.locator("#messages li.message").first.wait_for()
        await page.evaluate(INSTRUMENT)
        pages = 0
        while await page.locator("#older").is_visible():
            shown = await page.locator("#messages li.message").count()
            await page.locator("#older").click()
            await page.locator("#messages li.message").nth(shown).wait_for(state="attached")
            pages += 1
            await page.evaluate(FRAME_DONE, pages - 1)
        result: list[dict[str, float]] = await page.evaluate("window.benchPages")
        rows = await page.locator("#messages li.message").count()
        await browser.close()
    for index, entry in enumerate(result):
        entry["shown_after"] = min(rows, 50 * (index + 2))
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="chatd-bench-web-"))
    stack = Stack(root=root, workers=1, extra_env=ENV)
    web = Path(args.web_root) if args.web_root else web_root()
    assert web is not None, "no web/app in this checkout"
    assert (web / "index.html").exists(), web
    try:
        stack.up()
        if args.web_root:  # the same site, serving the other app
            stack._signal("nginx", signal.SIGQUIT)
            stack._wait_gone("nginx", 10)
            stack.start_nginx(chatd_web_root=str(web))
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            alice, bob = await user(http, "alice"), await user(http, "bob")
            opened = await http.post(
                "/v1/conversations/direct",
                json={"username": bob["name"]},
                headers={"Authorization": f"Bearer {alice['token']}"},
            )
            cid = opened.json()["id"]
        await fill(stack.url, bob["token"], cid, args.messages)
        runs = [await history(stack.url, alice, cid) for _ in range(args.runs)]
        return {
            "web_root": str(web),
            "messages": args.messages,
            "weight": await weight(stack.url, app_files(web)),
            "runs": runs,
        }
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)


def report(result: dict[str, Any]) -> str:
    w = result["weight"]
    lines = [
        f"app: {result['web_root']}",
        f"first load: {w['files']} files, {w['identity']} bytes plain, {w['gzip']} bytes with gzip",
        f"history of {result['messages']} messages, per older page, ms (median of {len(result['runs'])}):",
        "  rows shown after | script | to next frame",
    ]
    for index in range(len(result["runs"][0])):
        pages = [run[index] for run in result["runs"] if index < len(run)]
        script = statistics.median(p["script"] for p in pages)
        frame = statistics.median(p["frame"] for p in pages)
        lines.append(f"  {pages[0]['shown_after']:>16} | {script:6.1f} | {frame:6.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--web-root", help="the app to serve (default: this checkout's web/app)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(report(result))


if __name__ == "__main__":
    main()
