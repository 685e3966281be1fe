"""Per-user notices: what goes on a user's channel (``chatd:u:<uid>``), and how to rebuild it.

Sequenced notices have a durable source in Postgres. They are published through the outbox
and, since Redis pub/sub keeps nothing for a subscriber that is away, rebuilt from that source
when a worker's subscriber comes back (``rebuild``):

=====================  ======================================  =================================
op                     fields                                  rebuilt from
=====================  ======================================  =================================
``conversation_added`` ``conversation``, ``since``              ``members`` (``joined_seq``)
``settings``           ``share_read_state``                    ``users.share_read_state``
``revoke``             ``tokens`` (hex SHA-256 each)           ``tokens``: the session layer
                                                               re-checks every socket's token
``notify_settings``    ``dnd``, ``push_preview``, ``muted``      ``notify_settings``, ``members``:
                                                               sent again after an outage
                                                               (notify.py)
=====================  ======================================  =================================

Ephemeral notices (latest value wins, lost ones are not rebuilt): ``read_state`` (the user's
own read pointer moved on another device).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chatd.storage.notices import NoticeStore
from chatd.subscriber import Subscriber

Notice = dict[str, Any]
PUBLIC_CONVERSATION = ("id", "kind", "title", "created_at", "last_seq", "member_count")


def conversation_added(conv: dict[str, Any], since: int) -> Notice:
    """The user now follows `conv` from the event after seq `since`."""
    public = {key: conv[key] for key in PUBLIC_CONVERSATION}
    return {"op": "conversation_added", "conversation": public, "since": since}


def settings(share_read_state: bool) -> Notice:
    return {"op": "settings", "share_read_state": share_read_state}


def notify_settings(current: dict[str, Any]) -> Notice:
    """All of the user's notification settings (each change sends them whole)."""
    return {"op": "notify_settings", **current}


def revoke(*token_hashes: bytes) -> Notice:
    """Close the sockets of these tokens (a logout: one; a deactivation or a password change:
    every one of the user's, or all but the caller's)."""
    notice: Notice = {"op": "revoke", "tokens": [token_hash.hex() for token_hash in token_hashes]}
    if len(token_hashes) == 1:  # what workers of earlier releases read, during a rolling upgrade
        notice["token"] = token_hashes[0].hex()
    return notice


def read_state(cid: int, seq: int, origin: str) -> Notice:
    return {"op": "read_state", "conversation_id": cid, "last_read_seq": seq, "origin": origin}


async def rebuild(store: NoticeStore, conns: Iterable[Subscriber]) -> list[tuple[Subscriber, Notice]]:
    """The notices `conns` may have missed, as their durable source says now.

    Harmless when nothing was missed: a conversation the connection already follows is not in
    the result, and a `settings` notice is only made when the flag differs.
    """
    conns = list(conns)
    users = sorted({conn.user_id for conn in conns})
    if not users:
        return []
    memberships = await store.memberships(users)
    shared = await store.share_read_state(users)
    found: list[tuple[Subscriber, Notice]] = []
    for conn in conns:
        if conn.user_id in shared and shared[conn.user_id] != conn.share_read_state:
            found.append((conn, settings(shared[conn.user_id])))
        following = conn.conversations
        for conv, since in memberships.get(conn.user_id, ()):
            if conv["id"] not in following:
                found.append((conn, conversation_added(conv, since)))
    return found
