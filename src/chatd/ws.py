"""The WebSocket transport: authenticate, catch up, then read frames until the socket closes.

Follow one message: ``_on_send`` -> ``Messaging.send`` (messaging.py) -> ``MessageStore.append``
(storage/messages.py, the COMMIT) -> ``Hub.publish`` (fanout.py) -> each worker's subscriber ->
``Topic.accept`` -> ``Connection.deliver`` (connection.py) -> the recipient's socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from chatd import frames, logs, metrics, origins
from chatd.accounts import Identity
from chatd.connection import (
    CLOSE_AUTH_TIMEOUT,
    CLOSE_POLICY_VIOLATION,
    CLOSE_SERVICE_RESTART,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNAVAILABLE,
    Connection,
    dumps,
)
from chatd.errors import ChatdError, Code
from chatd.storage import is_unavailable

if TYPE_CHECKING:
    from chatd.app import Runtime

log = logging.getLogger("chatd.ws")
CATCH_UP_PAGE = 500
TYPING_INTERVAL_S = 1.0  # protocol.md §4.10: receivers show "typing" for 5 s after the last one


async def endpoint(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    if not origins.websocket_allowed(dict(websocket.headers), runtime.settings.allowed_origins):
        # Before accepting: the upgrade is answered 403 and no socket opens (protocol.md §11).
        log.info("ws refused: origin", extra={"origin": websocket.headers.get("origin")})
        await websocket.close(CLOSE_POLICY_VIOLATION)
        return
    await websocket.accept()
    if runtime.draining:
        await websocket.close(CLOSE_SERVICE_RESTART, "service restart")
        return
    auth = await _authenticate(websocket, runtime)
    if auth is None:
        return
    identity, since = auth
    user_id = identity.user_id
    conn = Connection(
        websocket, user_id, identity.token_hash, runtime.settings.send_queue_frames, runtime.hub.detach_one
    )
    conn.share_read_state = identity.share_read_state
    if not await _admitted(websocket, runtime, conn):
        return
    started = time.perf_counter()
    client = websocket.client.host if websocket.client else None
    log.info("ws connected", extra={"user_id": user_id, "client": client})
    metrics.WS_OPENED.inc()
    try:
        await runtime.hub.add_connection(conn)
        # A logout between the token check and that subscription published its revoke to
        # nobody: check again, now that a revoke would reach this connection.
        if not await runtime.accounts.is_live(identity.token_hash):
            conn.send(frames.error(ChatdError(Code.UNAUTHORIZED, "invalid or revoked token")))
            conn.close(CLOSE_UNAUTHORIZED, Code.UNAUTHORIZED)
            return
        await runtime.presence.connect(conn)
        await _sync(runtime, conn, since)
        await _read_loop(runtime, conn)
    except Exception as exc:
        if not is_unavailable(exc):
            log.exception("ws failed", extra={"user_id": user_id})
        conn.close(CLOSE_UNAVAILABLE, "temporarily unavailable")
    finally:
        runtime.hub.remove_connection(conn)
        await runtime.presence.disconnect(conn)
        await conn.finish()
        metrics.WS_CLOSED.labels(metrics.close_code(conn.close_code)).inc()
        log.info(
            "ws closed",
            extra={
                "user_id": user_id,
                "client": client,
                "code": conn.close_code,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )


async def _authenticate(websocket: WebSocket, runtime: Runtime) -> tuple[Identity, dict[int, int]] | None:
    try:
        message = await asyncio.wait_for(websocket.receive(), runtime.settings.auth_timeout_s)
    except TimeoutError:
        await websocket.close(CLOSE_AUTH_TIMEOUT, "no auth frame in time")
        return None
    if message["type"] == "websocket.disconnect":
        return None
    try:
        frame = frames.parse(frames.decode(message.get("text") or ""))
        if not isinstance(frame, frames.Auth):
            raise ChatdError(Code.UNAUTHORIZED, "the first frame must be auth")
        identity = await runtime.accounts.authenticate(frame.token)
    except ChatdError as exc:
        await websocket.send_text(dumps(frames.error(exc)))
        await websocket.close(CLOSE_UNAUTHORIZED, exc.code)
        return None
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        await websocket.close(CLOSE_UNAVAILABLE, "temporarily unavailable")
        return None
    return identity, frame.since


async def _admitted(websocket: WebSocket, runtime: Runtime, conn: Connection) -> bool:
    """The per-user connection cap (across workers), checked after auth: else close 4009."""
    cap = runtime.settings.max_connections_per_user
    try:
        if await runtime.conncap.admit(conn.user_id, conn.id):
            return True
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        await websocket.close(CLOSE_UNAVAILABLE, "temporarily unavailable")
        return False
    log.info("ws refused: connection cap", extra={"user_id": conn.user_id})
    error = ChatdError(Code.TOO_MANY_CONNECTIONS, f"at most {cap} connections per user", limit=cap)
    await websocket.send_text(dumps(frames.error(error)))
    await websocket.close(CLOSE_TOO_MANY_CONNECTIONS, "too many connections")
    return False


async def _sync(runtime: Runtime, conn: Connection, since: dict[int, int]) -> None:
    """Attach to every conversation, say `ready`, send what was missed, then go live."""
    convs = await runtime.messaging.conversations(conn.user_id)
    cids = [conv["id"] for conv in convs]
    for cid in cids:
        conn.begin(cid, since.get(cid, 0))
    await runtime.hub.attach(conn, cids)
    # Every event after what this worker has dispatched reaches `conn` (held in `pending`),
    # so that is the point from which the conversation is live for this connection.
    last = runtime.hub.dispatched(cids)
    ahead = [cid for cid in cids if since.get(cid, 0) > last.get(cid, 0)]
    if ahead:  # the client has more than this worker dispatched yet, or claims to: ask Postgres
        last.update(await runtime.stores.conversations.last_seqs(ahead))
    read_state = await runtime.receipts.sync(conn.user_id, cids)
    for conv in convs:
        conv["last_seq"] = last.get(conv["id"], conv["last_seq"])
        conv["last_read_seq"], conv["unread"] = read_state.get(conv["id"], (0, 0))
    presence = await runtime.presence.snapshot(conn.user_id)
    for entry in presence:
        conn.presence_versions[entry["user_id"]] = entry["version"]
    conn.send({"type": "ready", "user_id": conn.user_id, "conversations": convs, "presence": presence})
    for cid in cids:
        if cid not in since or since[cid] > last.get(cid, 0):  # a `since` past the end: the end
            conn.delivered[cid] = last.get(cid, 0)
        if cid not in since:
            conn.end_catch_up(cid)
    for cid in cids:
        if cid in since:
            await _catch_up(runtime, conn, cid)
    for cid in sorted(set(since) - set(cids)):
        conn.send(
            frames.error(
                ChatdError(Code.NOT_MEMBER, "not a member of this conversation", conversation_id=cid)
            )
        )
        await conn.drained()  # paced like catch-up: any number of refusals fits the queue
    conn.send({"type": "synced"})
    conn.mark_synced()
    for conv, after in conn.deferred:
        await follow(runtime, conn, conv, after)  # skips what `ready` already included
    conn.deferred.clear()


async def _catch_up(runtime: Runtime, conn: Connection, cid: int) -> None:
    while cid in conn.delivered:
        page = await runtime.stores.messages.page(cid, after=conn.delivered[cid], limit=CATCH_UP_PAGE)
        metrics.DELIVERED_CATCH_UP.inc(len(page))
        for event in page:
            if not conn.push(cid, event["seq"], dumps(event), event):
                return
            # Paced per event: a page may hold more events than the send queue.
            await conn.drained()
        if len(page) < CATCH_UP_PAGE:
            break
    conn.end_catch_up(cid)


async def follow(runtime: Runtime, conn: Connection, conv: dict[str, Any], after: int) -> None:
    """Start delivering a conversation the user was just added to."""
    cid = conv["id"]
    if cid in conn.delivered:
        return
    conn.send({"type": "conversation_added", "conversation": conv})
    conn.begin(cid, after)
    try:
        await runtime.hub.attach(conn, [cid])
        await _catch_up(runtime, conn, cid)
    except Exception as exc:
        log.warning(
            "follow failed",
            extra={"user_id": conn.user_id, "conversation_id": cid},
            exc_info=None if is_unavailable(exc) else exc,
        )
        conn.close(CLOSE_UNAVAILABLE, "temporarily unavailable")


def on_user_message(runtime: Runtime, conn: Connection, payload: dict[str, Any]) -> None:
    op = payload.get("op")
    if op == "conversation_added":
        if conn.synced:
            runtime.hub.spawn(follow(runtime, conn, payload["conversation"], payload["since"]))
        else:  # `ready` is not out yet: follow it afterwards, in order
            conn.deferred.append((payload["conversation"], payload["since"]))
    elif op == "read_state" and payload.get("origin") != conn.id:
        frame = {
            "type": "read_state",
            "conversation_id": payload["conversation_id"],
            "last_read_seq": payload["last_read_seq"],
        }
        conn.broadcast(dumps(frame), frame)  # held until `synced`, like other state
    elif op == "settings":
        conn.share_read_state = bool(payload["share_read_state"])
    elif op == "revoke" and payload.get("token") == conn.token_hash.hex():
        conn.close(CLOSE_UNAUTHORIZED, "token revoked")


async def recheck_tokens(runtime: Runtime, conns: list[Connection]) -> None:
    """Close connections whose token was revoked while no revoke could reach them (this
    worker's Redis subscriber was away, or the logging-out worker died before its publish)."""
    live = await runtime.accounts.live_tokens(sorted({conn.token_hash for conn in conns}))
    for conn in conns:
        if conn.token_hash not in live:
            conn.close(CLOSE_UNAUTHORIZED, "token revoked")  # as a live revoke does


async def _read_loop(runtime: Runtime, conn: Connection) -> None:
    websocket = conn.websocket
    while conn.close_code is None:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            conn.close_code = conn.close_code or message.get("code", 1000)
            return
        ref = None
        received = time.time()
        try:
            if message.get("text") is None:
                raise ChatdError(Code.BAD_JSON, "binary frames are not accepted; send JSON text")
            raw = frames.decode(message["text"])
            ref = frames.request_id(raw)
            frame = frames.parse(raw)
            if isinstance(frame, frames.Send):
                await _on_send(runtime, conn, frame, ref, received)
            elif isinstance(frame, frames.Read):
                await _on_read(runtime, conn, frame, ref)
            elif isinstance(frame, frames.Status):
                await runtime.presence.set_idle(conn, frame.idle)
            elif isinstance(frame, frames.Ping):
                conn.send({"type": "pong"})
            elif isinstance(frame, frames.Typing):
                await _on_typing(runtime, conn, frame)
            else:
                raise ChatdError(Code.BAD_REQUEST, "already authenticated")
        except ChatdError as exc:
            conn.send(frames.error(exc, ref))
        except Exception as exc:
            if is_unavailable(exc):
                logs.throttled(log, "unavailable", "unavailable reply", cause=repr(exc))
                conn.send(frames.error(ChatdError(Code.UNAVAILABLE, "try again"), ref))
            else:
                logs.throttled(log, "internal", "frame failed", user_id=conn.user_id, exc_info=exc)
                metrics.ERRORS.labels("unhandled").inc()
                conn.send(frames.error(ChatdError(Code.INTERNAL, "internal error"), ref))


async def _on_send(runtime: Runtime, conn: Connection, frame: frames.Send, ref: Any, received: float) -> None:
    if runtime.draining:
        raise ChatdError(Code.SHUTTING_DOWN, "this worker is restarting; resend after reconnect")
    with runtime.in_flight():
        ack = await runtime.messaging.send(
            conn.user_id, frame.conversation_id, frame.client_msg_id, frame.body
        )
    if ref is not None:
        ack["ref"] = ref
    conn.send(ack, received, metrics.ACK_LATENCY if metrics.ENABLED else None)


async def _on_typing(runtime: Runtime, conn: Connection, frame: frames.Typing) -> None:
    """Relay "typing" to the conversation's connections: never stored, at most one a second
    per connection and conversation (extra frames are dropped without a reply)."""
    cid = frame.conversation_id
    if cid not in conn.delivered:  # this connection follows exactly the user's conversations
        raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation")
    now = time.monotonic()
    seen = conn.typing_at if conn.typing_at is not None else {}
    if now - seen.get(cid, -TYPING_INTERVAL_S) < TYPING_INTERVAL_S:
        return
    seen[cid] = now
    conn.typing_at = seen
    event = {"type": "typing", "conversation_id": cid, "user_id": conn.user_id}
    runtime.hub.publish_state(event, key=("typing", cid, conn.user_id))


async def _on_read(runtime: Runtime, conn: Connection, frame: frames.Read, ref: Any) -> None:
    cid = frame.conversation_id
    metrics.READ_MARKS.inc()
    pointer = await runtime.receipts.mark(
        conn.user_id, cid, frame.seq, conn.share_read_state, conn.delivered.get(cid, 0), conn.id
    )
    reply: dict[str, Any] = {"type": "read_state", "conversation_id": cid, "last_read_seq": pointer}
    if ref is not None:
        reply["ref"] = ref
    conn.send(reply)
