"""SYNCING: `ready`, catch-up from Postgres, then `synced`; and following a conversation the
user was added to while connected (docs/protocol.md §4.1, §4.5)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from chatd import frames, metrics
from chatd.connection import Connection, dumps
from chatd.errors import ChatdError, Code
from chatd.sessions.following import Following
from chatd.sessions.streams import Streams
from chatd.subscriber import Subscriber

if TYPE_CHECKING:
    from chatd.runtime import Runtime


class Session(Subscriber, Protocol):
    """What syncing needs of the session (session.py): its services, socket and streams."""

    runtime: Runtime
    conn: Connection
    streams: Streams
    following: Following


log = logging.getLogger("chatd.ws")
CATCH_UP_PAGE = 500
READY_PAGE = 250  # conversations per `ready` or `conversations` frame


async def sync(session: Session, since: dict[int, int]) -> None:
    """Attach to every conversation, say `ready` (its conversations in pages), send what was
    missed, then `synced`."""
    rt, conn, streams = session.runtime, session.conn, session.streams
    convs = await rt.conversations.of_user(conn.user_id)
    cids = [conv["id"] for conv in convs]
    for cid in cids:
        streams.begin(cid, since.get(cid, 0))
    await rt.hub.attach(session, cids)
    # Every event after what this worker has dispatched reaches the session (held in
    # `pending`), so that is the point from which the conversation is live for it.
    last = rt.hub.dispatched(cids)
    ahead = [cid for cid in cids if since.get(cid, 0) > last.get(cid, 0)]
    if ahead:  # the client has more than this worker dispatched yet, or claims to: ask Postgres
        last.update(await rt.conversations.last_seqs(ahead))
    # The seq each conversation is known committed up to: what catch-up and the unread counts
    # must cover (a replica that has not replayed that far is not read, storage/replica.py).
    heads = {conv["id"]: max(conv["last_seq"], last.get(conv["id"], 0)) for conv in convs}
    pointers = await rt.receipts.pointers(conn.user_id, [conv["id"] for conv in convs])
    presence = await session.following.start()
    # At most READY_PAGE conversations a frame, whatever their number (protocol.md §4.1): a
    # client's frame limit bounds what it can take, and strangers can add anyone to groups.
    for start in range(0, max(len(convs), 1), READY_PAGE):
        page = convs[start : start + READY_PAGE]
        mine = {c["id"]: pointers.get(c["id"], 0) for c in page}
        unread = await rt.receipts.unread(conn.user_id, mine, heads)
        for conv in page:
            conv["last_seq"] = last.get(conv["id"], conv["last_seq"])
            conv["last_read_seq"], conv["unread"] = pointers.get(conv["id"], 0), unread.get(conv["id"], 0)
        more = start + READY_PAGE < len(convs)
        if start == 0:
            frame = {"type": "ready", "user_id": conn.user_id, "conversations": page, "more": more}
            limits = {
                "max_message_chars": rt.settings.max_message_chars,
                "edit_window_s": rt.settings.edit_window_s,
            }
            conn.send({**frame, "presence": presence, "limits": limits})
        else:
            conn.send({"type": "conversations", "conversations": page, "more": more})
        for conv in page:  # listed: live events of conversations not in `since` may go now
            cid = conv["id"]
            if cid not in since or since[cid] > last.get(cid, 0):  # a `since` past the end: the end
                streams.cursor[cid] = last.get(cid, 0)
            if cid not in since:
                streams.end_catch_up(cid)
        await conn.drained()  # paced like catch-up
    for cid in cids:
        if cid in since:
            await catch_up(session, cid, heads[cid])
    for cid in sorted(set(since) - set(cids)):
        error = ChatdError(Code.NOT_MEMBER, "not a member of this conversation", conversation_id=cid)
        conn.send(frames.error(error))
        await conn.drained()  # paced like catch-up: any number of refusals fits the queue
    conn.send({"type": "synced"})
    streams.release_early()


async def catch_up(session: Session, cid: int, head: int | None) -> None:
    """Send what was missed after the cursor: at least up to `head`, a seq known committed
    (None: not known, read from the primary)."""
    streams = session.streams
    while cid in streams.cursor:
        page = await session.runtime.messaging.catch_up_page(cid, streams.cursor[cid], CATCH_UP_PAGE, head)
        metrics.DELIVERED_CATCH_UP.inc(len(page))
        for event in page:
            if not streams.push(cid, event["seq"], dumps(event), event):
                return
            # Paced per event: a page may hold more events than the send queue.
            await session.conn.drained()
        if len(page) < CATCH_UP_PAGE:
            break
    streams.end_catch_up(cid)


async def follow(session: Session, conv: dict[str, Any], after: int) -> None:
    """Start delivering a conversation the user was just added to."""
    cid = conv["id"]
    if cid in session.streams.cursor:
        return
    session.conn.send({"type": "conversation_added", "conversation": conv})
    session.streams.begin(cid, after)
    await session.runtime.hub.attach(session, [cid])
    await catch_up(session, cid, conv.get("last_seq"))
    await session.following.joined(cid, conv["member_count"])
