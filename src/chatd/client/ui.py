"""The terminal: a prompt_toolkit prompt that incoming lines never garble (`patch_stdout`)."""

from __future__ import annotations

import asyncio
import contextlib

from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app_or_none
from prompt_toolkit.patch_stdout import patch_stdout

from chatd.client.commands import Commands
from chatd.client.session import ChatSession


def out(line: str) -> None:
    print(line, flush=True)  # patch_stdout draws it above the prompt


def refresh() -> None:
    app = get_app_or_none()
    if app is not None and app.is_running:
        app.invalidate()


async def _line(prompt: PromptSession[str]) -> str | None:
    """The next line typed; None on ^D or ^C."""
    try:
        return await prompt.prompt_async("> ")
    except (EOFError, KeyboardInterrupt):
        return None


async def run_chat(session: ChatSession) -> None:
    """Until ^D, ^C, or the session stops (its exception propagates)."""
    # erase_when_done: the typed line leaves the prompt and comes back once, as a message
    prompt: PromptSession[str] = PromptSession(bottom_toolbar=session.toolbar, erase_when_done=True)
    commands = Commands(session)  # a line typed: a message, or /edit, /search, ...
    with patch_stdout(raw=True):
        live = asyncio.create_task(session.run())
        try:
            while True:
                line_task = asyncio.create_task(_line(prompt))
                done, _ = await asyncio.wait({live, line_task}, return_when=asyncio.FIRST_COMPLETED)
                if live in done:
                    line_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await line_task
                    live.result()  # raises why it stopped
                    return
                line = line_task.result()
                if line is None:
                    return
                await commands.line(line)
        finally:
            live.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await live
