"""All SQL lives in this package. Stores take an asyncpg pool and return plain dicts."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from chatd.storage.accounts import AccountStore
from chatd.storage.conversations import ConversationStore
from chatd.storage.messages import MessageStore
from chatd.storage.notices import NoticeStore
from chatd.storage.presence import PresenceStore
from chatd.storage.receipts import ReceiptStore

__all__ = [
    "AccountStore",
    "ConversationStore",
    "MessageStore",
    "NoticeStore",
    "PresenceStore",
    "ReceiptStore",
    "Stores",
    "create_pool",
    "is_unavailable",
]

Pool = asyncpg.Pool


class Stores:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.accounts = AccountStore(pool)
        self.conversations = ConversationStore(pool)
        self.messages = MessageStore(pool)
        self.receipts = ReceiptStore(pool)
        self.presence = PresenceStore(pool)
        self.notices = NoticeStore(pool)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release hook: nothing to undo. chatd never changes session state on pooled connections
    (no SET, LISTEN, advisory locks or cursors outside a transaction), so asyncpg's default
    reset (RESET ALL, CLOSE ALL, UNLISTEN, unlock: one more round trip after every query) is
    skipped. asyncpg still rolls back a transaction left open."""


async def create_pool(dsn: str, min_size: int, max_size: int) -> Pool:
    pool: Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        reset=_keep_session,
        # A server restart kills idle connections; recycle them rather than fail a request.
        max_inactive_connection_lifetime=60,
        command_timeout=30,
    )
    return pool


def is_unavailable(exc: BaseException) -> bool:
    """True when the database (or Redis) could not be reached: the client should retry."""
    import redis.exceptions

    return isinstance(
        exc,
        (
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.OperatorInterventionError,
            asyncpg.exceptions.CannotConnectNowError,
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            ConnectionError,
            OSError,
            asyncio.TimeoutError,
        ),
    )


def record(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return None if row is None else dict(row.items())
