"""Browser origins: CORS on /v1/ and the Origin check on the WebSocket upgrade (protocol.md §11).

The app itself is served from the API's origin, so by default no other origin is allowed;
``CHATD_ALLOWED_ORIGINS`` lists the origins of other web apps that may use this server.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import orjson
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from chatd.errors import ChatdError, Code

# What the API uses: every method of §3 and the two request headers a client sends.
CORS_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE"]
CORS_HEADERS = ["Authorization", "Content-Type"]
CORS_MAX_AGE_S = 600


def same_origin(origin: str, host: str) -> bool:
    """True when the Origin header names the host the request was sent to (port included)."""
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == host.strip().lower()


def websocket_allowed(headers: dict[str, str], allowed: tuple[str, ...]) -> bool:
    """A browser always sends Origin on a WebSocket upgrade; other clients usually send none."""
    origin = headers.get("origin")
    if origin is None:
        return True
    return origin.lower() in allowed or same_origin(origin, headers.get("host", ""))


class _Cors(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        """A refused preflight in chatd's error shape (Starlette answers it in text)."""
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = bytes(response.body).decode().replace("Disallowed CORS", "CORS preflight refused:")
        body = orjson.dumps({"error": ChatdError(Code.BAD_REQUEST, refused).to_dict()})
        headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        return Response(body, response.status_code, headers, media_type="application/json")


class ApiCors:
    """Starlette's CORS middleware, applied to /v1/ only, when any origin is allowed."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.cors = _Cors(
            app,
            allow_origins=list(allowed),
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            max_age=CORS_MAX_AGE_S,
        )
        self.enabled = bool(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
