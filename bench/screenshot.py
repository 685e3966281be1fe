"""The README's screenshot of the web app: `python -m bench.screenshot [--out docs/web-chat.png]`.

A local stack of its own (chatd.devstack) in a temporary directory; three people in a group
write a short exchange with a link, an image (drawn here with Pillow) and an edited message,
each member reads up to the last one and one of them stays online; then Chromium shows it
through the first person's eyes, 1200 x 1000.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets
from PIL import Image, ImageDraw
from playwright.async_api import async_playwright

from chatd.devstack import Stack

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "screenshot-password-not-secret"  # noqa: S105
ENV = {
    "CHATD_LOG_LEVEL": "warning",
    "CHATD_REGISTRATION": "open",
    "CHATD_ARGON2_TIME_COST": "1",
    "CHATD_ARGON2_MEMORY_KIB": "1024",
}


def mockup() -> bytes:
    """A wireframe of a landing page, as a PNG: what a designer would paste."""
    img = Image.new("RGB", (960, 600), "#f4f6fb")
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 960, 72), fill="#2f4f8f")
    draw.rectangle((40, 24, 200, 48), fill="#ffffff")
    for x in (620, 720, 820):
        draw.rectangle((x, 30, x + 70, 42), fill="#b9c7e6")
    draw.rectangle((40, 130, 560, 180), fill="#1d2b4a")
    draw.rectangle((40, 200, 480, 222), fill="#8a96b0")
    draw.rectangle((40, 236, 420, 258), fill="#8a96b0")
    draw.rounded_rectangle((40, 300, 240, 356), radius=12, fill="#e8833a")
    draw.rounded_rectangle((600, 120, 920, 400), radius=16, fill="#cfd9ef")
    draw.ellipse((700, 180, 820, 300), fill="#2f4f8f")
    for i, x in enumerate((40, 340, 640)):
        draw.rounded_rectangle((x, 440, x + 280, 570), radius=12, fill=("#ffffff", "#ffffff", "#fff4ea")[i])
        draw.rectangle((x + 24, 470, x + 200, 486), fill="#1d2b4a")
        draw.rectangle((x + 24, 500, x + 240, 512), fill="#8a96b0")
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


class Person:
    def __init__(self, http: httpx.AsyncClient, name: str) -> None:
        self.http = http
        self.name = name
        self.token = ""
        self.id = 0
        self.ws: Any = None

    async def register(self) -> None:
        body = {"username": self.name, "password": PASSWORD}
        assert (await self.http.post("/v1/register", json=body)).status_code == 201
        login = (await self.http.post("/v1/login", json=body)).json()
        self.token, self.id = login["token"], login["user_id"]

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def connect(self, base: str) -> None:
        self.ws = await websockets.connect(base.replace("http://", "ws://") + "/v1/ws")
        await self.ws.send(orjson.dumps({"type": "auth", "token": self.token}).decode())
        await self.until(lambda f: f["type"] == "synced")

    async def until(self, done: Any) -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = orjson.loads(await self.ws.recv())
            assert frame["type"] != "error", frame
            if done(frame):
                return frame

    async def frame(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a send/edit frame; its ack."""
        cmid = uuid.uuid4().hex
        await self.ws.send(orjson.dumps({**frame, "id": cmid, "client_msg_id": cmid}).decode())
        return await self.until(lambda f: f["type"] == "ack" and f["client_msg_id"] == cmid)

    async def say(self, cid: int, body: str, files: list[int] | None = None) -> int:
        frame: dict[str, Any] = {"type": "send", "conversation_id": cid, "body": body}
        if files:
            frame["attachments"] = files
        return int((await self.frame(frame))["seq"])

    async def read(self, cid: int, seq: int) -> None:
        await self.ws.send(orjson.dumps({"type": "read", "conversation_id": cid, "seq": seq}).decode())


async def scene(base: str, out: Path) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        alice, bob, carol = (Person(http, n) for n in ("alice", "bob", "carol"))
        for person in (alice, bob, carol):
            await person.register()
        made = await http.post(
            "/v1/conversations/group",
            json={"title": "Launch week", "usernames": ["bob", "carol"]},
            headers=alice.auth(),
        )
        cid = made.json()["id"]
        for person in (alice, bob, carol):
            await person.connect(base)
        await bob.say(cid, "Morning! The landing page draft is up: https://example.com/launch/draft")
        await alice.say(cid, "Looks good. @bob can we move the sign-up button above the fold?")
        uploaded = await http.post(
            "/v1/files", params={"name": "landing-v2.png"}, content=mockup(), headers=bob.auth()
        )
        assert uploaded.status_code == 201, uploaded.text
        await bob.say(cid, "Like this?", [uploaded.json()["file"]["id"]])
        seq = await carol.say(cid, "Much better. Ship it on Thursday")
        fixed = "Much better. Ship it on Wednesday"
        await carol.frame({"type": "edit", "conversation_id": cid, "seq": seq, "body": fixed})
        last = await carol.say(cid, "I'll write the announcement https://example.com/blog/launch")
        for person in (alice, bob, carol):
            await person.read(cid, last)
        await bob.ws.close()  # bob is away; carol stays online

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            token = {"name": "chatd.token", "value": alice.token}
            state = {"origins": [{"origin": base, "localStorage": [token]}]}
            context = await browser.new_context(
                storage_state=state,  # type: ignore[arg-type]
                viewport={"width": 1200, "height": 1000},
                device_scale_factor=1,
            )
            page = await context.new_page()
            await page.goto(base + "/")
            await page.locator("#link[data-connection='online']").wait_for()
            await page.locator(f"#conversations li[data-conversation-id='{cid}'] button").click()
            await page.locator("#messages img").first.wait_for()
            await page.locator("#messages li.message").last.scroll_into_view_if_needed()
            await page.wait_for_timeout(500)  # the read counts' coalesced push
            await page.screenshot(path=str(out))
            await browser.close()
        await alice.ws.close()
        await carol.ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/web-chat.png")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="chatd-screenshot-"))
    stack = Stack(root=root, workers=1, extra_env=ENV)
    try:
        stack.up()
        asyncio.run(scene(stack.url, Path(args.out).resolve()))
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)
    print(args.out)


if __name__ == "__main__":
    main()
