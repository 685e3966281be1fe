"""HTTP endpoints (JSON): accounts, conversations, history, health (what they share is in
http_request.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatd import frames
from chatd.conversations import LEAVE_MAX
from chatd.errors import ChatdError, Code
from chatd.http_request import (
    JSON,
    api,
    authenticated,
    id_list,
    identify,
    optional_string,
    path_id,
    query_int,
    read_json,
    runtime,
    string,
)
from chatd.search import PAGE_DEFAULT


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
    return JSON(await runtime(request).conversations.find_user(user_id, frames.check_text(name, "username")))


# -- conversations -----------------------------------------------------------------------
@api
async def list_conversations(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    return JSON({"conversations": await runtime(request).conversations.of_user(user_id)})


@api
async def open_direct(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    body = await read_json(request)
    conversations = runtime(request).conversations
    if "user_id" in body:
        others = await conversations.resolve_users(user_id, [frames.positive_id(body, "user_id")], [])
    else:
        others = await conversations.resolve_users(user_id, [], [string(body, "username")])
    conv, created = await conversations.open_direct(user_id, others[0])
    return JSON(conv, status_code=201 if created else 200)


@api
async def create_group(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    body = await read_json(request)
    title = string(body, "title").strip()
    if not 1 <= len(title) <= 200:
        raise ChatdError(Code.BAD_REQUEST, "title: 1 to 200 characters", field="title")
    conversations = runtime(request).conversations
    members = await conversations.resolve_users(
        user_id, id_list(body, "user_ids", int), id_list(body, "usernames", str)
    )
    return JSON(await conversations.create_group(user_id, title, members), status_code=201)


@api
async def get_conversation(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    return JSON(await runtime(request).conversations.get(user_id, path_id(request)))


@api
async def list_members(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    after = query_int(request, "after", 0) or 0
    limit = query_int(request, "limit", 100, low=1) or 100
    members = await runtime(request).conversations.members(user_id, path_id(request), after, limit)
    return JSON({"members": members})


@api
async def add_members(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    body = await read_json(request)
    conversations = runtime(request).conversations
    users = await conversations.resolve_users(
        user_id, id_list(body, "user_ids", int), id_list(body, "usernames", str)
    )
    if not users:
        raise ChatdError(Code.BAD_REQUEST, "user_ids or usernames: name at least one user")
    event = await conversations.add_members(user_id, path_id(request), users)
    return JSON({"event": event})


@api
async def remove_member(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    target = path_id(request, "user_id")
    event = await runtime(request).conversations.remove_members(user_id, path_id(request), [target])
    return JSON({"event": event})


@api
async def leave(request: Request) -> Response:
    """Leave many groups at once, or decline every group one never took part in (§3)."""
    user_id, _ = await authenticated(request)
    body = await read_json(request)
    conversations = runtime(request).conversations
    if "conversation_ids" in body:
        cids = list(dict.fromkeys(id_list(body, "conversation_ids", int)))
        if not 0 < len(cids) <= LEAVE_MAX:
            raise ChatdError(
                Code.BAD_REQUEST, f"conversation_ids: 1 to {LEAVE_MAX} ids", field="conversation_ids"
            )
        return JSON(await conversations.leave_many(user_id, cids))
    if body.get("not_taken_part") is not True:
        raise ChatdError(
            Code.BAD_REQUEST,
            "conversation_ids or not_taken_part: true: which groups to leave",
            field="conversation_ids",
        )
    return JSON(await conversations.leave_many(user_id, None))


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
