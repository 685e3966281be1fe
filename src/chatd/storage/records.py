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


# Kinds that are messages people read: they count as unread and get read receipts. Any other
# kind (a membership change, and whatever refers to an earlier message) never does.
READABLE: tuple[Kind, ...] = (Kind.TEXT,)
MEMBERSHIP: tuple[Kind, ...] = (Kind.MEMBERS_ADDED, Kind.MEMBERS_REMOVED)

EVENT_COLUMNS = (
    "id, conversation_id, seq, sender_id, client_msg_id, kind, body, user_ids, created_at,"
    " attachments::text AS attachments"  # jsonb, decoded here (migration 0009)
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
