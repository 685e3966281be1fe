"""What every HTTP endpoint module shares: JSON replies and error replies, the `api` wrapper
(a ChatdError or an unavailable store becomes its documented error reply), reading and checking
the body, the query and the path (the `id` convertor), and the bearer token."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response

from chatd import frames, logs, metrics
from chatd.accounts import Identity
from chatd.errors import HTTP_STATUS, ChatdError, Code
from chatd.storage import is_unavailable

log = logging.getLogger("chatd.http")

if TYPE_CHECKING:
    from chatd.runtime import Runtime

Handler = Callable[[Request], Awaitable[Response]]


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: ChatdError) -> JSON:
    metrics.error_reply(exc)
    return JSON({"error": exc.to_dict()}, status_code=HTTP_STATUS[exc.code])


def api(fn: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except ChatdError as exc:
            return error_response(exc)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            logs.throttled(log, "unavailable", "unavailable reply", path=request.url.path, cause=repr(exc))
            return error_response(ChatdError(Code.UNAVAILABLE, "storage unavailable; retry"))

    return wrapped


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def read_json(request: Request) -> dict[str, Any]:
    limit = runtime(request).settings.max_http_body_bytes
    declared = frames.digits_value(request.headers.get("content-length", ""))
    if declared is not None and declared > limit:
        raise ChatdError(Code.TOO_LARGE, f"body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ChatdError(Code.TOO_LARGE, f"body is larger than {limit} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ChatdError(Code.BAD_JSON, "body is not valid UTF-8") from None
    return frames.decode(text, what="body")


def string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ChatdError(Code.BAD_REQUEST, f"{name}: expected a string", field=name)
    return frames.check_text(value, name)


def optional_string(body: dict[str, Any], name: str) -> str | None:
    """A string field that may be absent or null."""
    return None if body.get(name) is None else string(body, name)


def id_list(body: dict[str, Any], name: str, kind: type) -> list[Any]:
    value = body.get(name, [])

    def valid(v: object) -> bool:
        if isinstance(v, bool) or not isinstance(v, kind):
            return False
        if isinstance(v, str):
            return "\x00" not in v
        return not isinstance(v, int) or 0 < v <= frames.MAX_ID

    if not isinstance(value, list) or not all(valid(v) for v in value):
        expected = "positive integers" if kind is int else "strings"
        raise ChatdError(Code.BAD_REQUEST, f"{name}: expected a list of {expected}", field=name)
    return value


def query_int(request: Request, name: str, default: int | None, low: int = 0) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = frames.digits_value(raw)
    if value is None or value < low:
        raise ChatdError(Code.BAD_REQUEST, f"{name}: expected an integer >= {low}", field=name)
    return value


class IdConvertor(Convertor[int]):
    """`{name:id}` in a path: ASCII digits. A value of 2^63 or more (any length) becomes 2^63,
    which path_id refuses like 0: `not_member` (protocol.md §3)."""

    regex = "[0-9]+"

    def convert(self, value: str) -> int:
        converted = frames.digits_value(value)
        return frames.MAX_ID + 1 if converted is None else converted

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())


def path_id(request: Request, name: str = "conversation_id") -> int:
    value: int = request.path_params[name]
    if not 0 < value <= frames.MAX_ID:
        raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation")
    return value


async def authenticated(request: Request) -> tuple[int, bytes]:
    identity = await identify(request)
    return identity.user_id, identity.token_hash


async def identify(request: Request) -> Identity:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ChatdError(Code.UNAUTHORIZED, "missing bearer token")
    identity = await runtime(request).accounts.authenticate(token.strip())
    request.scope["chatd.user_id"] = identity.user_id
    return identity
