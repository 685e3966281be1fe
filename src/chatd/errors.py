"""Error codes shared by HTTP responses and WebSocket ``error`` frames (docs/protocol.md)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Code(StrEnum):
    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    MESSAGE_TOO_LONG = "message_too_long"
    UNAUTHORIZED = "unauthorized"
    INVALID_CREDENTIALS = "invalid_credentials"
    USERNAME_TAKEN = "username_taken"
    REGISTRATION_CLOSED = "registration_closed"
    INVITE_REQUIRED = "invite_required"
    INVALID_INVITE = "invalid_invite"
    ACCOUNT_DEACTIVATED = "account_deactivated"
    WRONG_PASSWORD = "wrong_password"  # noqa: S105  (an error code, not a password)
    LAST_ADMIN = "last_admin"
    CANNOT_DEACTIVATE_SELF = "cannot_deactivate_self"
    USER_NOT_FOUND = "user_not_found"
    NOT_MEMBER = "not_member"
    FORBIDDEN = "forbidden"
    GROUP_FULL = "group_full"
    NOT_A_GROUP = "not_a_group"
    CLIENT_MSG_ID_CONFLICT = "client_msg_id_conflict"
    SEQ_OUT_OF_RANGE = "seq_out_of_range"
    EDIT_WINDOW_CLOSED = "edit_window_closed"
    MESSAGE_DELETED = "message_deleted"
    GROUP_TOO_LARGE = "group_too_large"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    NOT_FOUND = "not_found"
    PUSH_DISABLED = "push_disabled"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNAVAILABLE = "unavailable"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"


HTTP_STATUS: dict[Code, int] = {
    Code.BAD_JSON: 400,
    Code.BAD_REQUEST: 400,
    Code.UNKNOWN_TYPE: 400,
    Code.TOO_LARGE: 413,
    Code.MESSAGE_TOO_LONG: 400,
    Code.UNAUTHORIZED: 401,
    Code.INVALID_CREDENTIALS: 401,
    Code.USERNAME_TAKEN: 409,
    Code.REGISTRATION_CLOSED: 403,
    Code.INVITE_REQUIRED: 403,
    Code.INVALID_INVITE: 403,
    Code.ACCOUNT_DEACTIVATED: 403,
    Code.WRONG_PASSWORD: 403,
    Code.LAST_ADMIN: 409,
    Code.CANNOT_DEACTIVATE_SELF: 409,
    Code.USER_NOT_FOUND: 404,
    Code.NOT_MEMBER: 403,
    Code.FORBIDDEN: 403,
    Code.GROUP_FULL: 409,
    Code.NOT_A_GROUP: 409,
    Code.CLIENT_MSG_ID_CONFLICT: 409,
    Code.SEQ_OUT_OF_RANGE: 400,
    Code.EDIT_WINDOW_CLOSED: 403,
    Code.MESSAGE_DELETED: 409,
    Code.GROUP_TOO_LARGE: 403,
    Code.RATE_LIMITED: 429,
    Code.TOO_MANY_CONNECTIONS: 429,
    Code.NOT_FOUND: 404,
    Code.PUSH_DISABLED: 404,
    Code.METHOD_NOT_ALLOWED: 405,
    Code.UNAVAILABLE: 503,
    Code.SHUTTING_DOWN: 503,
    Code.INTERNAL: 500,
}


class ChatdError(Exception):
    """A request failed with a documented code; nothing was stored."""

    def __init__(self, code: Code, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        return {"code": str(self.code), "message": self.message, **self.extra}
