"""How the terminal client writes things: sizes, times, message bodies, search results."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

Frame = dict[str, Any]


def size_text(size: int) -> str:
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def clock(created_at: str) -> str:
    when = datetime.fromisoformat(created_at).astimezone()
    if when.date() == datetime.now().astimezone().date():
        return when.strftime("%H:%M")
    return when.strftime("%Y-%m-%d %H:%M")


def shown(event: Frame) -> str:
    if event.get("deleted_at"):
        return "(message deleted)"
    return f"{event['body']} (edited)" if event.get("edited_at") else str(event["body"])


def short(body: str) -> str:
    return body if len(body) <= 30 else body[:29] + "…"


def search_line(result: Frame, name: Callable[[int | None], str]) -> str:
    """One search result: where, when, who, and the snippet with hits in [brackets]. Control
    characters are dropped: a message must not drive the terminal."""

    def clean(text: str) -> str:
        return "".join(c for c in text if c.isprintable())

    snippet = "".join(f"[{clean(s['text'])}]" if s["hit"] else clean(s["text"]) for s in result["snippet"])
    when = clock(result["created_at"])
    return f"#{result['conversation_id']}:{result['seq']} {when} {name(result['sender_id'])}: {snippet}"
