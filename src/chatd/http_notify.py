"""HTTP endpoints for notifications and Web Push (docs/protocol.md §12)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatd.errors import ChatdError, Code
from chatd.http_request import JSON, api, authenticated, path_id, read_json, runtime, string


def _flag(body: dict[str, Any], name: str, required: bool = False) -> bool | None:
    value = body.get(name)
    if value is None and not required and name not in body:
        return None
    if not isinstance(value, bool):
        raise ChatdError(Code.BAD_REQUEST, f"{name}: expected true or false", field=name)
    return value


@api
async def get_settings(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    return JSON(await runtime(request).notify.settings(user_id))


@api
async def put_settings(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    body = await read_json(request)
    dnd, preview = _flag(body, "dnd"), _flag(body, "push_preview")
    if dnd is None and preview is None:
        raise ChatdError(Code.BAD_REQUEST, "dnd or push_preview: name a setting to change", field="dnd")
    return JSON(await runtime(request).notify.change(user_id, dnd, preview))


@api
async def mute(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    body = await read_json(request)
    muted = _flag(body, "muted", required=True)
    assert muted is not None
    return JSON(await runtime(request).notify.mute(user_id, path_id(request), muted))


@api
async def push_key(request: Request) -> Response:
    return JSON({"public_key": runtime(request).notify.public_key()})


@api
async def subscribe(request: Request) -> Response:
    user_id, token_hash = await authenticated(request)
    body = await read_json(request)
    keys = body.get("keys")
    if not isinstance(keys, dict):
        raise ChatdError(Code.BAD_REQUEST, "keys: expected {p256dh, auth}", field="keys")
    found = await runtime(request).notify.subscribe(
        user_id, token_hash, string(body, "endpoint"), string(keys, "p256dh"), string(keys, "auth")
    )
    return JSON({"id": found}, status_code=201)


@api
async def unsubscribe(request: Request) -> Response:
    user_id, _ = await authenticated(request)
    body = await read_json(request)
    await runtime(request).notify.unsubscribe(user_id, string(body, "endpoint"))
    return Response(status_code=204)


@api
async def subscriptions(request: Request) -> Response:
    user_id, token_hash = await authenticated(request)
    return JSON({"subscriptions": await runtime(request).notify.subscriptions(user_id, token_hash)})


routes = [
    Route("/v1/me/notifications", get_settings),
    Route("/v1/me/notifications", put_settings, methods=["PUT"]),
    Route("/v1/conversations/{conversation_id:int}/mute", mute, methods=["PUT"]),
    Route("/v1/push/key", push_key),
    Route("/v1/push/subscriptions", subscriptions),
    Route("/v1/push/subscriptions", subscribe, methods=["POST"]),
    Route("/v1/push/subscriptions", unsubscribe, methods=["DELETE"]),
]
