"""What a typed line does: a message, or one of the commands `/edit [#SEQ] TEXT`,
`/delete [#SEQ]`, `/upload PATH`, `/search WORDS` and `/more` (docs/client.md)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from chatd.client.api import Api, ApiError
from chatd.client.lines import search_line
from chatd.client.session import ChatSession

Frame = dict[str, Any]


class Commands:
    def __init__(self, session: ChatSession) -> None:
        self.session = session
        self._searches: set[asyncio.Task[None]] = set()
        self._search_q = ""
        self._search_next: int | None = None

    async def line(self, line: str) -> None:
        words = line.strip()
        if words == "/more" or words.startswith("/search "):
            query = words.removeprefix("/search ").strip()
            task = asyncio.create_task(self.search(query, more=words == "/more"))  # in the background
            self._searches.add(task)
            task.add_done_callback(self._searches.discard)
        elif words.startswith("/upload "):
            await self.upload(words.removeprefix("/upload ").strip())
        elif words and not self.change(line):
            self.session.submit(line)

    async def upload(self, path: str, caption: str = "") -> None:
        """`/upload PATH`: the file goes up first (streamed from disk), then a message with it."""
        session = self.session
        session.out(f"  uploading {path} …")
        try:
            async with Api(session.url, session.token) as api:
                file = await api.upload(path)
        except (OSError, ApiError) as exc:
            session.out(f"* not uploaded ({exc}): {path}")
            return
        session.submit(caption, files=[file])

    def change(self, line: str) -> bool:
        """`/edit [#SEQ] TEXT` and `/delete [#SEQ]` (protocol.md §4.11): your last message, or
        the one at SEQ. True if `line` was one of them (handled, or refused with a note)."""
        session = self.session
        name, _, rest = line.strip().partition(" ")
        if name not in ("/edit", "/delete"):
            return False
        target = session.last_own()
        seq_text, _, text = rest.strip().partition(" ")
        if seq_text.startswith("#") and seq_text[1:].isdigit():
            target, rest = int(seq_text[1:]), text
        if target is None:
            session.out("* nothing of yours to change here yet")
        elif name == "/edit" and not rest.strip():
            session.out("* usage: /edit [#SEQ] NEW TEXT")
        elif not session.synced or session.ws is None:
            session.out("* not connected: try again once connected")
        else:
            frame: Frame = {"conversation_id": session.cid, "client_msg_id": uuid.uuid4().hex, "seq": target}
            frame |= {"type": "edit", "body": rest.strip()} if name == "/edit" else {"type": "delete"}
            frame["id"] = frame["client_msg_id"]
            asyncio.get_running_loop().create_task(session.send_frame(frame))
        return True

    async def search(self, words: str, more: bool = False) -> None:
        """`/search WORDS` (and `/more`): the newest matches in my conversations, 20 at a time."""
        session = self.session
        if more and self._search_next is None:
            session.out("* no more results")
            return
        q = self._search_q if more else words
        try:
            async with Api(session.url, session.token) as api:
                found = await api.search(q, self._search_next if more else None)
        except ApiError as exc:
            session.out(f"* search failed: {exc}")
            return
        self._search_q, self._search_next = q, found["next_before"]
        if not found["results"] and not more:
            session.out(f"* nothing found for {q!r}")
        for result in found["results"]:
            session.out(search_line(result, session.name))
        if found["next_before"] is not None:
            session.out("* more: /more")
