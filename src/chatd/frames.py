"""Client frames: JSON text validated into small typed records (docs/protocol.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from chatd import metrics
from chatd.errors import ChatdError, Code

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


@dataclass(frozen=True, slots=True)
class Read:
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


Frame = Auth | Send | Read | Status | Ping | Typing


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


def parse(frame: dict[str, Any]) -> Frame:
    kind = frame.get("type")
    if kind == "send":
        client_msg_id: str = _field(frame, "client_msg_id", str)
        if not CLIENT_MSG_ID.match(client_msg_id):
            raise ChatdError(
                Code.BAD_REQUEST,
                "client_msg_id: 1-64 characters of A-Z a-z 0-9 . _ : -",
                field="client_msg_id",
            )
        body: str = _field(frame, "body", str)
        if not body.strip():
            raise ChatdError(Code.BAD_REQUEST, "body: must not be empty", field="body")
        return Send(positive_id(frame, "conversation_id"), client_msg_id, body)
    if kind == "read":
        return Read(positive_id(frame, "conversation_id"), positive_id(frame, "seq"))
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
