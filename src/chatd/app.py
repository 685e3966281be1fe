"""The Starlette application: routes, lifespan, access log and error pages."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatd import http_accounts, http_api, http_files, http_notify, http_request, logs, metrics, ws
from chatd.config import Settings
from chatd.errors import ChatdError, Code
from chatd.origins import ApiCors
from chatd.runtime import Runtime, SchemaOutdated, close_runtime, open_runtime

log = logging.getLogger("chatd")
access_log = logging.getLogger("chatd.http")

__all__ = ["Runtime", "SchemaOutdated", "create_app", "open_runtime"]  # the server and the CLI use these


class AccessLog:
    """One line per HTTP request (WebSocket sessions are logged by the ws module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            access_log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                    "user_id": scope.get("chatd.user_id"),
                    # The real client: uvicorn's proxy-headers middleware has applied nginx's
                    # X-Forwarded-For by now.
                    "client": (scope.get("client") or (None,))[0],
                },
            )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: Code.NOT_FOUND, 405: Code.METHOD_NOT_ALLOWED}.get(exc.status_code, Code.BAD_REQUEST)
    response = http_request.error_response(ChatdError(code, str(exc.detail)))
    response.status_code = exc.status_code
    return response


async def server_error(request: Request, exc: Exception) -> Response:
    metrics.ERRORS.labels("unhandled").inc()
    logs.throttled(log, "internal", "unhandled error", logging.ERROR, path=request.url.path, exc_info=exc)
    return http_request.error_response(ChatdError(Code.INTERNAL, "internal error"))


def create_app(settings: Settings, runtime: Runtime | None = None) -> Starlette:
    """The app; `runtime` may be opened by the caller (the server does, to fail fast)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt = runtime or await open_runtime(settings)
        app.state.runtime = rt
        try:
            yield
        finally:
            await close_runtime(rt)

    app = Starlette(
        routes=[
            *http_api.routes,
            *http_accounts.routes,
            *http_notify.routes,
            *http_files.routes,
            WebSocketRoute("/v1/ws", ws.endpoint),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    # `/v1/me/` is an unknown path (404), not a redirect to a Location built from the Host.
    app.router.redirect_slashes = False
    app.add_middleware(ApiCors, allowed=settings.allowed_origins)
    app.add_middleware(AccessLog)
    return app
