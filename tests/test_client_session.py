"""The terminal client's session state, fed frames directly: orderings a live stack rarely shows."""

from __future__ import annotations

import asyncio

import orjson

from chatd.client.lines import search_line
from chatd.client.session import ChatSession


def session(lines: list[str]) -> ChatSession:
    profile = {"token": "t", "user_id": 1}
    conversation = {"id": 7, "kind": "direct", "title": None}
    return ChatSession("http://127.0.0.1:1", profile, conversation, {1: "alice", 2: "bob"}, lines.append)


def own_event() -> dict[str, object]:
    event = {"type": "message", "conversation_id": 7, "seq": 1, "id": 10, "kind": "text", "sender_id": 1}
    return event | {"client_msg_id": "m1", "body": "hello", "created_at": "2026-11-29T04:00:00+00:00"}


def test_own_line_is_shown_once_when_the_ack_arrives_before_the_event() -> None:
    # The ack and the live event of one's own send travel separately (the event through Redis),
    # so either may come first; the line must be printed once either way.
    lines: list[str] = []
    chat = session(lines)
    chat.submit("hello", "m1")
    chat._frame({"type": "ack", "conversation_id": 7, "client_msg_id": "m1", "seq": 1})
    event = own_event()
    chat._frame(event)
    assert sum("alice: hello" in line for line in lines) == 1, lines
    assert any("saved: hello" in line for line in lines), lines


def test_own_line_is_shown_once_when_the_event_arrives_before_the_ack() -> None:
    lines: list[str] = []
    chat = session(lines)
    chat.submit("hello", "m1")
    event = own_event()
    chat._frame(event)
    chat._frame({"type": "ack", "conversation_id": 7, "client_msg_id": "m1", "seq": 1})
    assert sum("alice: hello" in line for line in lines) == 1, lines


def test_delivered_comes_between_saved_and_read_and_never_after_read() -> None:
    lines: list[str] = []
    chat = session(lines)
    chat.submit("hello", "m1")
    chat._frame({"type": "ack", "conversation_id": 7, "client_msg_id": "m1", "seq": 1})
    chat._frame({"type": "delivered", "conversation_id": 7, "user_id": 2, "seq": 1})
    chat._frame({"type": "read", "conversation_id": 7, "user_id": 2, "seq": 1})
    chat._frame({"type": "delivered", "conversation_id": 7, "user_id": 2, "seq": 1})  # late: ignored
    shown = [line for line in lines if "hello" in line]
    assert [line.split(":")[0].strip() for line in shown[1:]] == [
        "✓ saved",
        "✓ delivered to bob",
        "✓✓ read by bob",
    ]


def test_group_counts_show_delivered_then_read() -> None:
    lines: list[str] = []
    chat = ChatSession(
        "http://127.0.0.1:1", {"token": "t", "user_id": 1}, {"id": 7, "kind": "group", "title": "g"},
        {1: "alice", 2: "bob", 3: "carol"}, lines.append,
    )  # fmt: skip
    chat.submit("hello", "m1")
    chat._frame({"type": "ack", "conversation_id": 7, "client_msg_id": "m1", "seq": 1})
    for delivered, read in ((1, 0), (2, 0), (2, 1)):
        count = {"seq": 1, "read_by": read, "delivered_to": delivered, "of": 2}
        chat._frame({"type": "receipts", "conversation_id": 7, "members": 3, "counts": [count]})
    assert [line.strip() for line in lines[2:]] == [
        "✓ delivered to 1 of 2: hello",
        "✓ delivered to 2 of 2: hello",
        "✓✓ read by 1 of 2: hello",
    ]


class Sent:
    def __init__(self) -> None:
        self.frames: list[dict[str, object]] = []

    async def send(self, text: str) -> None:
        self.frames.append(orjson.loads(text))


async def test_received_is_confirmed_once_per_batch_of_frames() -> None:
    lines: list[str] = []
    chat = session(lines)
    sent = Sent()
    chat.ws = sent  # type: ignore[assignment]
    for seq in (1, 2, 3):  # one batch: frames handled in one pass of the loop
        event = {**own_event(), "seq": seq, "sender_id": 2, "client_msg_id": f"b{seq}"}
        chat._frame(event)
    for _ in range(3):
        await asyncio.sleep(0)
    assert [f for f in sent.frames if f["type"] == "received"] == [
        {"type": "received", "conversation_id": 7, "seq": 3}
    ]


def test_search_lines_show_hits_and_drop_control_characters() -> None:
    result = {
        "conversation_id": 7,
        "seq": 12,
        "sender_id": 2,
        "created_at": "2026-11-29T04:00:00+00:00",
        "snippet": [{"text": "we \x1b[2Jchose ", "hit": False}, {"text": "parsers", "hit": True}],
    }
    line = search_line(result, {2: "bob"}.get)  # type: ignore[arg-type]
    assert line.startswith("#7:12 ") and line.endswith("bob: we [2Jchose [parsers]")
    assert "\x1b" not in line
