"""What storage returns for the conversation timeline: typed records, not wire frames.

Every sequenced event of a conversation is one row of `messages` with a `kind`. The kinds are
declared here once (the migrations' CHECK constraint lists the same names); SQL takes them as
parameters rather than spelling them out. `frames.message` turns an `Event` into the frame
clients get (docs/protocol.md §4).
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg
import orjson


class Kind(enum.StrEnum):
    TEXT = "text"  # a user's message
    MEMBERS_ADDED = "members_added"
    MEMBERS_REMOVED = "members_removed"
    EDIT = "edit"  # the message at ref_seq has a new body
    DELETE = "delete"  # the message at ref_seq is gone (a tombstone)


# Kinds that are messages people read: they count as unread and get read receipts. Any other
# kind (a membership change, and whatever refers to an earlier message) never does.
READABLE: tuple[Kind, ...] = (Kind.TEXT,)
MEMBERSHIP: tuple[Kind, ...] = (Kind.MEMBERS_ADDED, Kind.MEMBERS_REMOVED)

EVENT_COLUMNS = (
    "id, conversation_id, seq, sender_id, client_msg_id, kind, body, user_ids, created_at,"
    " ref_seq, edited_at, deleted_at, attachments::text AS attachments"  # jsonb (migration 0011)
)

# Events as clients see them (history, catch-up, gap fill): an edit or delete row has no text
# of its own and shows its original's current body and marks (migration 0011).
TIMELINE = (
    "SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.client_msg_id, m.kind,"
    " CASE WHEN m.ref_seq IS NULL THEN m.body ELSE coalesce(o.body, '') END AS body,"
    " m.user_ids, m.created_at, m.ref_seq, coalesce(m.edited_at, o.edited_at) AS edited_at,"
    " coalesce(m.deleted_at, o.deleted_at) AS deleted_at, m.attachments::text AS attachments"
    " FROM messages m LEFT JOIN messages o ON o.conversation_id = m.conversation_id AND o.seq = m.ref_seq"
)


@dataclass(frozen=True, slots=True)
class Event:
    """One stored, sequenced event of a conversation."""

    id: int
    conversation_id: int
    seq: int
    kind: Kind
    sender_id: int | None
    client_msg_id: str | None
    body: str
    user_ids: tuple[int, ...] | None
    created_at: datetime.datetime
    ref_seq: int | None = None  # an edit's or delete's original message
    edited_at: datetime.datetime | None = None  # text: when last edited; edit: ditto
    deleted_at: datetime.datetime | None = None  # text: deleted (body is empty)
    # What the message shows of the files it carries (storage/files.py); None: none.
    attachments: tuple[dict[str, Any], ...] | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Event:
        user_ids = row["user_ids"]
        return cls(
            id=row["id"],
            conversation_id=row["conversation_id"],
            seq=row["seq"],
            kind=Kind(row["kind"]),
            sender_id=row["sender_id"],
            client_msg_id=row["client_msg_id"],
            body=row["body"],
            user_ids=tuple(user_ids) if user_ids is not None else None,
            created_at=row["created_at"],
            ref_seq=row["ref_seq"],
            edited_at=row["edited_at"],
            deleted_at=row["deleted_at"],
            attachments=tuple(orjson.loads(row["attachments"])) if row["attachments"] else None,
        )


class Append(NamedTuple):
    """One send for the group commit."""

    conversation_id: int
    sender_id: int
    client_msg_id: str
    body: str
    kind: Kind = Kind.TEXT
    files: tuple[int, ...] = ()  # uploaded files the message carries, linked in its transaction
