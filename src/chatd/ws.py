"""The WebSocket transport: accept the socket, decode frames, route them to the session.

Everything a frame or an event means is decided by the session (sessions/). Follow one
message: docs/architecture.md.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from chatd import frames, http_request, metrics, origins
from chatd.errors import ChatdError, Code
from chatd.sessions import Session, authenticate

if TYPE_CHECKING:
    from chatd.runtime import Runtime

log = logging.getLogger("chatd.ws")


async def endpoint(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    if not origins.websocket_allowed(dict(websocket.headers), runtime.settings.allowed_origins):
        # Before accepting: the upgrade is answered 403 and no socket opens (protocol.md §11).
        log.info("ws refused: origin", extra={"origin": websocket.headers.get("origin")})
        refusal = ChatdError(Code.FORBIDDEN, "origin not allowed")
        await websocket.send_denial_response(http_request.error_response(refusal))
        return
    await websocket.accept()
    authenticated = await authenticate(runtime, websocket)
    if authenticated is None:
        return
    session, since = authenticated
    client = websocket.client.host if websocket.client else None
    log.info("ws connected", extra={"user_id": session.user_id, "client": client})
    metrics.WS_OPENED.inc()
    try:
        if await session.start(since):
            await _read_loop(websocket, session)
    except Exception as exc:
        session.fail(exc, "ws failed")
    finally:
        await session.end()
        metrics.WS_CLOSED.labels(metrics.close_code(session.close_code)).inc()
        extra = {"user_id": session.user_id, "client": client, "code": session.close_code}
        log.info("ws closed", extra={**extra, "seconds": session.seconds})


async def _read_loop(websocket: WebSocket, session: Session) -> None:
    while session.reading:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            session.disconnected(message.get("code", 1000))
            return
        text = message.get("text")
        ref = None
        try:
            if text is None:
                raise ChatdError(Code.BAD_JSON, "binary frames are not accepted; send JSON text")
            raw = frames.decode(text)
            ref = frames.request_id(raw)
            frame: frames.Frame | ChatdError = frames.parse(raw)
        except ChatdError as exc:
            frame = exc
        await session.take(frame, ref, len(text or message.get("bytes") or b""))
