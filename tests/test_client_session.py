"""The terminal client's session state, fed frames directly: orderings a live stack rarely shows."""

from __future__ import annotations

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
