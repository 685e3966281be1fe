"""AUTHENTICATING: the first frame, the token, and the per-user connection cap (across
workers), before a Session exists for the socket."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from chatd import frames
from chatd.connection import dumps
from chatd.errors import ChatdError, Code
from chatd.sessions import state
from chatd.sessions.session import Session

if TYPE_CHECKING:
    from chatd.runtime import Runtime

log = logging.getLogger("chatd.ws")


async def authenticate(runtime: Runtime, websocket: WebSocket) -> tuple[Session, dict[int, int]] | None:
    """AUTHENTICATING: the first frame must be a valid `auth`, then the per-user connection
    cap (across workers) must admit the session; else the socket is closed here."""
    if runtime.draining:
        await _refuse(websocket, state.RESTARTING)
        return None
    try:
        message = await asyncio.wait_for(websocket.receive(), runtime.settings.auth_timeout_s)
    except TimeoutError:
        await _refuse(websocket, state.AUTH_TIMEOUT)
        return None
    if message["type"] == "websocket.disconnect":
        return None
    try:
        frame = frames.parse(frames.decode(message.get("text") or ""))
        if not isinstance(frame, frames.Auth):
            raise ChatdError(Code.UNAUTHORIZED, "the first frame must be auth")
        identity = await runtime.accounts.authenticate(frame.token)
    except ChatdError as exc:
        await _refuse(websocket, state.auth_refused(exc), exc)
        return None
    except Exception as exc:
        await _refuse(websocket, state.close_for_failure(exc, "auth failed"))
        return None
    session = Session(runtime, websocket, identity)
    cap = runtime.settings.max_connections_per_user
    try:
        admitted = await runtime.conncap.admit(session.user_id, session.id)
    except Exception as exc:
        await _refuse(websocket, state.close_for_failure(exc, "admission failed", session.user_id))
        return None
    if not admitted:
        log.info("ws refused: connection cap", extra={"user_id": session.user_id})
        error = ChatdError(Code.TOO_MANY_CONNECTIONS, f"at most {cap} connections per user", limit=cap)
        await _refuse(websocket, state.TOO_MANY, error)
        return None
    return session, frame.since


async def _refuse(websocket: WebSocket, close: state.Close, error: ChatdError | None = None) -> None:
    if error is not None:
        await websocket.send_text(dumps(frames.error(error)))
    await websocket.close(close.code, close.reason)
