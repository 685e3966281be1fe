"""The WebSocket's frames (docs/protocol.md): client frames, JSON text validated into small
typed records; and what the server sends about stored events (`message`, `ack`), encoded from
storage's records here and nowhere else."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from chatd import metrics
from chatd.errors import ChatdError, Code
from chatd.storage.records import Event

MAX_ID = 2**63 - 1  # ids and seqs are Postgres bigints
MAX_REF_CHARS = 64
CLIENT_MSG_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Auth:
    token: str
    since: dict[int, int]


@dataclass(frozen=True, slots=True)
class Send:
    conversation_id: int
    client_msg_id: str
    body: str
    attachments: tuple[int, ...] = ()  # uploaded files' ids (docs/protocol.md §13)


@dataclass(frozen=True, slots=True)
class Edit:
    conversation_id: int
    client_msg_id: str
    seq: int  # the message edited
    body: str


@dataclass(frozen=True, slots=True)
class Delete:
    conversation_id: int
    client_msg_id: str
    seq: int  # the message deleted


@dataclass(frozen=True, slots=True)
class Read:
    conversation_id: int
    seq: int


@dataclass(frozen=True, slots=True)
class Received:
    """A device got the conversation's events up to `seq` (delivery receipts, §4.8)."""

    conversation_id: int
    seq: int


@dataclass(frozen=True, slots=True)
class Status:
    idle: bool


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Typing:
    conversation_id: int


Frame = Auth | Send | Edit | Delete | Read | Received | Status | Ping | Typing


def _field(frame: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    value = frame.get(name)
    if value is None and not required:
        return None
    # bool is an int in Python; it is never a valid id or seq here.
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = {int: "an integer", str: "a string", dict: "an object"}[kind]
        raise ChatdError(Code.BAD_REQUEST, f"{name}: expected {expected}", field=name)
    return check_text(value, name) if isinstance(value, str) else value


def check_text(value: str, name: str) -> str:
    """Postgres text cannot hold NUL: refuse it up front rather than fail (a batch) in storage."""
    if "\x00" in value:
        raise ChatdError(Code.BAD_REQUEST, f"{name}: must not contain NUL characters", field=name)
    return value


def positive_id(frame: dict[str, Any], name: str) -> int:
    value: int = _field(frame, name, int)
    if not 0 < value <= MAX_ID:
        raise ChatdError(Code.BAD_REQUEST, f"{name}: must be a positive integer", field=name)
    return value


def is_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts superscripts and other scripts' digits."""
    return text.isascii() and text.isdigit()


def digits_value(text: str) -> int | None:
    """The value of a string of ASCII digits below 2^63, else None. Never int() of a long
    string: past 4,300 digits Python refuses to convert it (ValueError)."""
    if not is_digits(text):
        return None
    significant = text.lstrip("0")
    if len(significant) > len(str(MAX_ID)):
        return None
    value = int(significant or "0")
    return value if value <= MAX_ID else None


def parse_since(raw: dict[str, Any] | None) -> dict[int, int]:
    since: dict[int, int] = {}
    for key, value in (raw or {}).items():
        valid_value = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID
        cid = digits_value(key)
        if not cid or not valid_value:
            raise ChatdError(
                Code.BAD_REQUEST, 'since: expected {"<conversation_id>": <seq>, ...}', field="since"
            )
        since[cid] = value
    return since


def request_id(frame: dict[str, Any]) -> str | int | None:
    """The frame's `id`, echoed as `ref`: checked first, so any reply to the frame can be encoded."""
    value = frame.get("id")
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_REF_CHARS:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID:
        return value
    raise ChatdError(
        Code.BAD_REQUEST,
        f"id: a string of at most {MAX_REF_CHARS} characters, or an integer from 0 to 2^63-1",
        field="id",
    )


def decode(text: str, what: str = "frame") -> dict[str, Any]:
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ChatdError(Code.BAD_JSON, f"{what} is not valid JSON") from None
    if not isinstance(frame, dict):
        raise ChatdError(Code.BAD_JSON, f"{what} must be a JSON object")
    return frame


def _attachments(value: object) -> tuple[int, ...]:
    """A send's `attachments`: absent or a list of file ids (their number and owner are the
    service's to check)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_ID for v in value
    ):
        raise ChatdError(Code.BAD_REQUEST, "attachments: expected a list of file ids", field="attachments")
    return tuple(value)


def _client_msg_id(frame: dict[str, Any]) -> str:
    client_msg_id: str = _field(frame, "client_msg_id", str)
    if not CLIENT_MSG_ID.match(client_msg_id):
        raise ChatdError(
            Code.BAD_REQUEST, "client_msg_id: 1-64 characters of A-Z a-z 0-9 . _ : -", field="client_msg_id"
        )
    return client_msg_id


def _body(frame: dict[str, Any]) -> str:
    body: str = _field(frame, "body", str)
    if not body.strip():
        raise ChatdError(Code.BAD_REQUEST, "body: must not be empty", field="body")
    return body


def parse(frame: dict[str, Any]) -> Frame:
    kind = frame.get("type")
    if kind == "send":
        client_msg_id = _client_msg_id(frame)
        attachments = _attachments(frame.get("attachments"))
        # with files, the text (a caption) may be empty or left out
        body = (_field(frame, "body", str, required=False) or "") if attachments else _body(frame)
        return Send(positive_id(frame, "conversation_id"), client_msg_id, body, attachments)
    if kind == "edit":
        client_msg_id, body = _client_msg_id(frame), _body(frame)
        return Edit(positive_id(frame, "conversation_id"), client_msg_id, positive_id(frame, "seq"), body)
    if kind == "delete":
        client_msg_id = _client_msg_id(frame)
        return Delete(positive_id(frame, "conversation_id"), client_msg_id, positive_id(frame, "seq"))
    if kind == "read":
        return Read(positive_id(frame, "conversation_id"), positive_id(frame, "seq"))
    if kind == "received":
        return Received(positive_id(frame, "conversation_id"), positive_id(frame, "seq"))
    if kind == "presence":
        status = frame.get("status")
        if status not in ("idle", "active"):
            raise ChatdError(Code.BAD_REQUEST, 'status: expected "idle" or "active"', field="status")
        return Status(status == "idle")
    if kind == "ping":
        return Ping()
    if kind == "typing":
        return Typing(positive_id(frame, "conversation_id"))
    if kind == "auth":
        token: str = _field(frame, "token", str)
        return Auth(token, parse_since(_field(frame, "since", dict, required=False)))
    if not isinstance(kind, str):
        raise ChatdError(Code.BAD_REQUEST, "type: expected a string", field="type")
    raise ChatdError(Code.UNKNOWN_TYPE, f"unknown frame type {kind!r}")


def error(exc: ChatdError, ref: Any = None) -> dict[str, Any]:
    metrics.error_reply(exc)
    frame: dict[str, Any] = {"type": "error", **exc.to_dict()}
    if ref is not None:
        frame["ref"] = ref
    return frame


# -- server frames of stored events ---------------------------------------------------------
def message(event: Event) -> dict[str, Any]:
    """A stored event as the `message` frame every member gets, live, on catch-up and in
    history (docs/protocol.md §4.2)."""
    frame: dict[str, Any] = {
        "type": "message",
        "conversation_id": event.conversation_id,
        "seq": event.seq,
        "id": event.id,
        "kind": event.kind,
        "sender_id": event.sender_id,
        "client_msg_id": event.client_msg_id,
        "body": event.body,
        "created_at": event.created_at,
    }
    if event.user_ids is not None:
        frame["user_ids"] = list(event.user_ids)
    if event.attachments is not None:
        frame["attachments"] = list(event.attachments)
    if event.ref_seq is not None:
        frame["ref_seq"] = event.ref_seq
    if event.edited_at is not None:
        frame["edited_at"] = event.edited_at
    if event.deleted_at is not None:
        frame["deleted_at"] = event.deleted_at
    return frame


def ack(event: Event, duplicate: bool) -> dict[str, Any]:
    """The sender's answer once `event` is committed; `duplicate` if it was stored before."""
    return {
        "type": "ack",
        "conversation_id": event.conversation_id,
        "client_msg_id": event.client_msg_id,
        "message_id": event.id,
        "seq": event.seq,
        "created_at": event.created_at,
        "duplicate": duplicate,
    }
