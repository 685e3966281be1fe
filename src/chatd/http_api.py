"""HTTP endpoints (JSON): accounts, conversations, history, health."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatd import frames, logs, metrics
from chatd.accounts import Identity
from chatd.errors import HTTP_STATUS, ChatdError, Code
from chatd.messaging import LEAVE_MAX
from chatd.search import PAGE_DEFAULT
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


# -- health ------------------------------------------------------------------------------
async def healthz(request: Request) -> Response:
    return JSON({"status": "ok"})


async def readyz(request: Request) -> Response:
    problems = await runtime(request).readiness()
    if problems:
        return JSON({"status": "unavailable", "problems": problems}, status_code=503)
    return JSON({"status": "ready"})


# -- accounts ----------------------------------------------------------------------------
@api
async def register(request: Request) -> Response:
    body = await read_json(request)
    client = request.client.host if request.client else "-"
    result = await runtime(request).accounts.register(
        string(body, "username"), string(body, "password"), client, optional_string(body, "invite")
    )
    return JSON(result, status_code=201)


@api
async def login(request: Request) -> Response:
    body = await read_json(request)
    client = request.client.host if request.client else "-"
    result = await runtime(request).accounts.login(
        string(body, "username"), string(body, "password"), client, request.headers.get("user-agent")
    )
    return JSON(result)


@api
async def logout(request: Request) -> Response:
    _, token_hash = await authenticated(request)
    await runtime(request).accounts.logout(token_hash)
    return Response(status_code=204)


@api
async def me(request: Request) -> Response:
    identity = await identify(request)  # the token's row already holds the profile
    return JSON(
        {
            "user_id": identity.user_id,
            "username": identity.username,
            "share_read_state": identity.share_read_state,
            "display_name": identity.display_name,
            "admin": identity.is_admin,
        }
    )


@api
async def settings(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    body = await read_json(request)
    share = body.get("share_read_state")
    if not isinstance(share, bool):
        raise ChatdError(
            Code.BAD_REQUEST, "share_read_state: expected true or false", field="share_read_state"
        )
    await runtime(request).receipts.set_share(user_id, share)
    return JSON({"share_read_state": share})


@api
async def read_state(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    return JSON({"conversations": await runtime(request).receipts.read_state(user_id)})


@api
async def find_user(request: Request) -> Response:
    """Who has this username, without opening a conversation (counted like naming users, §3)."""
    user_id, _ = await authenticated(request)
    name = request.query_params.get("username")
    if name is None or not name.strip():
        raise ChatdError(Code.BAD_REQUEST, "username: expected a username", field="username")
    return JSON(await runtime(request).messaging.find_user(user_id, frames.check_text(name, "username")))


# -- conversations -----------------------------------------------------------------------
@api
async def list_conversations(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    return JSON({"conversations": await runtime(request).messaging.conversations(user_id)})


@api
async def open_direct(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    body = await read_json(request)
    messaging = runtime(request).messaging
    if "user_id" in body:
        others = await messaging.resolve_users(user_id, [frames.positive_id(body, "user_id")], [])
    else:
        others = await messaging.resolve_users(user_id, [], [string(body, "username")])
    conv, created = await messaging.open_direct(user_id, others[0])
    return JSON(conv, status_code=201 if created else 200)


@api
async def create_group(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    body = await read_json(request)
    title = string(body, "title").strip()
    if not 1 <= len(title) <= 200:
        raise ChatdError(Code.BAD_REQUEST, "title: 1 to 200 characters", field="title")
    messaging = runtime(request).messaging
    members = await messaging.resolve_users(
        user_id, id_list(body, "user_ids", int), id_list(body, "usernames", str)
    )
    return JSON(await messaging.create_group(user_id, title, members), status_code=201)


@api
async def get_conversation(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    return JSON(await runtime(request).messaging.conversation(user_id, path_id(request)))


@api
async def list_members(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    after = query_int(request, "after", 0) or 0
    limit = query_int(request, "limit", 100, low=1) or 100
    members = await runtime(request).messaging.members(user_id, path_id(request), after, limit)
    return JSON({"members": members})


@api
async def add_members(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    body = await read_json(request)
    messaging = runtime(request).messaging
    users = await messaging.resolve_users(
        user_id, id_list(body, "user_ids", int), id_list(body, "usernames", str)
    )
    if not users:
        raise ChatdError(Code.BAD_REQUEST, "user_ids or usernames: name at least one user")
    event = await messaging.add_members(user_id, path_id(request), users)
    return JSON({"event": event})


@api
async def remove_member(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    target = path_id(request, "user_id")
    event = await runtime(request).messaging.remove_members(user_id, path_id(request), [target])
    return JSON({"event": event})


@api
async def leave(request: Request) -> Response:
    """Leave many groups at once, or decline every group one never took part in (§3)."""
    user_id, _ = await authenticated(request)
    body = await read_json(request)
    messaging = runtime(request).messaging
    if "conversation_ids" in body:
        cids = list(dict.fromkeys(id_list(body, "conversation_ids", int)))
        if not 0 < len(cids) <= LEAVE_MAX:
            raise ChatdError(
                Code.BAD_REQUEST, f"conversation_ids: 1 to {LEAVE_MAX} ids", field="conversation_ids"
            )
        return JSON(await messaging.leave_many(user_id, cids))
    if body.get("not_taken_part") is not True:
        raise ChatdError(
            Code.BAD_REQUEST,
            "conversation_ids or not_taken_part: true: which groups to leave",
            field="conversation_ids",
        )
    return JSON(await messaging.leave_many(user_id, None))


@api
async def history(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    after = query_int(request, "after", None)
    before = query_int(request, "before", None, low=1)
    limit = query_int(request, "limit", 50, low=1) or 50
    messages = await runtime(request).messaging.history(
        user_id, path_id(request), after=after, before=before, limit=limit
    )
    return JSON({"messages": messages})


@api
async def receipts(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    lo = query_int(request, "from", None, low=1)
    hi = query_int(request, "to", None, low=1)
    if lo is None or hi is None:
        raise ChatdError(Code.BAD_REQUEST, "from and to: the seq range to count", field="from")
    return JSON(await runtime(request).receipts.counts(user_id, path_id(request), lo, hi))


@api
async def readers(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    seq = path_id(request, "seq")  # like the ids: out of range is `not_member` (403), as documented
    users = await runtime(request).receipts.readers(user_id, path_id(request), seq)
    return JSON({"conversation_id": path_id(request), "seq": seq, "user_ids": users})


@api
async def search(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    cid = query_int(request, "conversation_id", None, low=1)
    before = query_int(request, "before", None, low=1)
    limit = query_int(request, "limit", PAGE_DEFAULT, low=1) or PAGE_DEFAULT
    found = await runtime(request).search.search(
        user_id, request.query_params.get("q", ""), conversation_id=cid, before=before, limit=limit
    )
    return JSON(found)


@api
async def presence(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    body = await read_json(request)
    wanted = sorted(set(id_list(body, "user_ids", int)))
    if not 0 < len(wanted) <= 1000:
        raise ChatdError(Code.BAD_REQUEST, "user_ids: 1 to 1000 users", field="user_ids")
    found, hidden = await runtime(request).presence.query(user_id, wanted)
    return JSON({"presence": found, "hidden": hidden})


routes = [
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/v1/register", register, methods=["POST"]),
    Route("/v1/login", login, methods=["POST"]),
    Route("/v1/logout", logout, methods=["POST"]),
    Route("/v1/me", me),
    Route("/v1/me/settings", settings, methods=["PUT"]),
    Route("/v1/me/read_state", read_state),
    Route("/v1/users", find_user),
    Route("/v1/presence", presence, methods=["POST"]),
    Route("/v1/search", search),
    Route("/v1/conversations", list_conversations),
    Route("/v1/conversations/direct", open_direct, methods=["POST"]),
    Route("/v1/conversations/group", create_group, methods=["POST"]),
    Route("/v1/conversations/leave", leave, methods=["POST"]),
    Route("/v1/conversations/{conversation_id:id}", get_conversation),
    Route("/v1/conversations/{conversation_id:id}/members", list_members),
    Route("/v1/conversations/{conversation_id:id}/members", add_members, methods=["POST"]),
    Route(
        "/v1/conversations/{conversation_id:id}/members/{user_id:id}",
        remove_member,
        methods=["DELETE"],
    ),
    Route("/v1/conversations/{conversation_id:id}/messages", history),
    Route("/v1/conversations/{conversation_id:id}/receipts", receipts),
    Route("/v1/conversations/{conversation_id:id}/messages/{seq:id}/readers", readers),
]
