"""HTTP endpoints of accounts beyond login: what the server lets in (`/v1/server`), one's own
password, display name and devices (`/v1/me/...`), and the admins' `/v1/admin/...`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatd import admin as admin_service
from chatd import frames
from chatd.accounts import Identity
from chatd.errors import ChatdError, Code
from chatd.http_request import JSON, api, identify, optional_string, query_int, read_json, runtime, string


def body_int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ChatdError(Code.BAD_REQUEST, f"{name}: an integer from {low} to {high}", field=name)
    return value


def body_bool(body: dict[str, Any], name: str, default: bool | None = None) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ChatdError(Code.BAD_REQUEST, f"{name}: expected true or false", field=name)
    return value


def path_number(request: Request, name: str, code: Code, what: str) -> int:
    value: int = request.path_params[name]
    if not 0 < value <= frames.MAX_ID:
        if code is Code.USER_NOT_FOUND:
            raise ChatdError(code, what, user_ids=[value])
        raise ChatdError(code, what)
    return value


def user_id(request: Request) -> int:
    return path_number(request, "user_id", Code.USER_NOT_FOUND, "no such user")


# -- what the server lets in (no token) -------------------------------------------------------
@api
async def server(request: Request) -> Response:
    """What a client needs before anyone logs in: whether registering needs an invite."""
    return JSON({"registration": runtime(request).accounts.registration})


# -- the caller's own account -----------------------------------------------------------------
@api
async def profile(request: Request) -> Response:
    identity = await identify(request)
    body = await read_json(request)
    if "display_name" not in body:
        raise ChatdError(
            Code.BAD_REQUEST, "display_name: a string, or null to clear it", field="display_name"
        )
    name = await runtime(request).accounts.set_display_name(identity, optional_string(body, "display_name"))
    return JSON({"display_name": name})


@api
async def password(request: Request) -> Response:
    identity = await identify(request)
    body = await read_json(request)
    current, new = string(body, "current_password"), string(body, "new_password")
    client = request.client.host if request.client else "-"
    revoked = await runtime(request).accounts.change_password(identity, current, new, client)
    return JSON({"revoked_sessions": revoked})


@api
async def sessions(request: Request) -> Response:
    identity = await identify(request)
    return JSON({"sessions": await runtime(request).accounts.sessions(identity)})


@api
async def revoke_session(request: Request) -> Response:
    identity = await identify(request)
    session_id = path_number(request, "session_id", Code.NOT_FOUND, "no such session")
    await runtime(request).accounts.revoke_session(identity, session_id)
    return Response(status_code=204)


# -- admins ---------------------------------------------------------------------------------------
# Every handler: the token (401), then the admin flag (403), then the request (400): a
# non-admin learns nothing about the body or the target.
async def admin_identity(request: Request) -> Identity:
    identity = await identify(request)
    admin_service.Admin.require(identity)
    return identity


@api
async def list_invites(request: Request) -> Response:
    actor = await admin_identity(request)
    return JSON({"invites": await runtime(request).admin.invites(actor)})


@api
async def create_invite(request: Request) -> Response:
    actor = await admin_identity(request)
    body = await read_json(request)
    uses = body_int(body, "max_uses", 1, 1, admin_service.MAX_INVITE_USES)
    low, high = admin_service.INVITE_EXPIRY_S
    expires = body_int(body, "expires_in_s", admin_service.DEFAULT_INVITE_EXPIRY_S, low, high)
    note = (optional_string(body, "note") or "").strip()
    if len(note) > admin_service.MAX_NOTE:
        raise ChatdError(Code.BAD_REQUEST, f"note: at most {admin_service.MAX_NOTE} characters", field="note")
    token, invite = await runtime(request).admin.create_invite(actor, uses, expires, note)
    return JSON({"token": token, "invite": invite}, status_code=201)


@api
async def revoke_invite(request: Request) -> Response:
    actor = await admin_identity(request)
    invite_id = path_number(request, "invite_id", Code.NOT_FOUND, "no such invite")
    return JSON({"invite": await runtime(request).admin.revoke_invite(actor, invite_id)})


@api
async def list_users(request: Request) -> Response:
    actor = await admin_identity(request)
    after = query_int(request, "after", 0) or 0
    limit = min(query_int(request, "limit", 100, low=1) or 100, 1000)
    return JSON({"users": await runtime(request).admin.users(actor, after, limit)})


@api
async def create_user(request: Request) -> Response:
    actor = await admin_identity(request)
    body = await read_json(request)
    name, secret = string(body, "username"), string(body, "password")
    user = await runtime(request).admin.create_user(actor, name, secret, body_bool(body, "admin", False))
    return JSON(user, status_code=201)


@api
async def deactivate(request: Request) -> Response:
    actor = await admin_identity(request)
    user, revoked = await runtime(request).admin.deactivate(actor, user_id(request))
    return JSON({"user": user, "revoked_sessions": revoked})


@api
async def reactivate(request: Request) -> Response:
    actor = await admin_identity(request)
    return JSON({"user": await runtime(request).admin.reactivate(actor, user_id(request))})


@api
async def reset_password(request: Request) -> Response:
    actor = await admin_identity(request)
    target = user_id(request)
    body = await read_json(request)
    user, revoked = await runtime(request).admin.reset_password(actor, target, string(body, "password"))
    return JSON({"user": user, "revoked_sessions": revoked})


@api
async def set_admin(request: Request) -> Response:
    actor = await admin_identity(request)
    target = user_id(request)
    body = await read_json(request)
    return JSON({"user": await runtime(request).admin.set_admin(actor, target, body_bool(body, "admin"))})


routes = [
    Route("/v1/server", server),
    Route("/v1/me/profile", profile, methods=["PUT"]),
    Route("/v1/me/password", password, methods=["PUT"]),
    Route("/v1/me/sessions", sessions),
    Route("/v1/me/sessions/{session_id:id}", revoke_session, methods=["DELETE"]),
    Route("/v1/admin/invites", list_invites),
    Route("/v1/admin/invites", create_invite, methods=["POST"]),
    Route("/v1/admin/invites/{invite_id:id}", revoke_invite, methods=["DELETE"]),
    Route("/v1/admin/users", list_users),
    Route("/v1/admin/users", create_user, methods=["POST"]),
    Route("/v1/admin/users/{user_id:id}/deactivate", deactivate, methods=["POST"]),
    Route("/v1/admin/users/{user_id:id}/reactivate", reactivate, methods=["POST"]),
    Route("/v1/admin/users/{user_id:id}/password", reset_password, methods=["PUT"]),
    Route("/v1/admin/users/{user_id:id}/admin", set_admin, methods=["PUT"]),
]
