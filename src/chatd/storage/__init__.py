"""All SQL lives in this package. Stores take an asyncpg pool and return plain dicts."""

from __future__ import annotations

import errno
import socket

import asyncpg
import redis.exceptions

from chatd.storage.accounts import AccountStore
from chatd.storage.admin import AdminStore
from chatd.storage.amends import AmendStore
from chatd.storage.conversations import ConversationStore
from chatd.storage.files import FileStore
from chatd.storage.messages import MessageStore
from chatd.storage.notices import NoticeStore
from chatd.storage.notify import NotifyStore
from chatd.storage.presence import PresenceStore
from chatd.storage.receipts import DeliveryStore, ReceiptStore
from chatd.storage.search import SearchStore

__all__ = [
    "AccountStore",
    "AdminStore",
    "AmendStore",
    "ConversationStore",
    "DeliveryStore",
    "FileStore",
    "MessageStore",
    "NoticeStore",
    "NotifyStore",
    "PresenceStore",
    "ReceiptStore",
    "SearchStore",
    "Stores",
    "create_pool",
    "is_unavailable",
]

Pool = asyncpg.Pool


class Stores:
    def __init__(self, pool: Pool, search_language: str = "english") -> None:
        self.pool = pool
        self.accounts = AccountStore(pool)
        self.admin = AdminStore(pool)
        self.conversations = ConversationStore(pool)
        self.messages = MessageStore(pool)
        self.amends = AmendStore(pool)
        self.receipts = ReceiptStore(pool)
        self.delivery = DeliveryStore(pool)
        self.presence = PresenceStore(pool)
        self.notices = NoticeStore(pool)
        self.notify = NotifyStore(pool)
        self.search = SearchStore(pool, search_language)
        self.files = FileStore(pool)


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


# OS-level failures to reach a peer (besides ConnectionError's refused/reset/aborted/broken pipe).
_UNREACHABLE = frozenset(
    {errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}
)
# asyncpg raises a plain InterfaceError, told apart only by its message, when the pool or the
# connection is closed under a request (a worker shutting down, a connection lost mid-query).
_CLOSED = (
    "pool is closing",
    "pool is closed",
    "connection is closed",
    "cannot perform operation: connection is closed",
)


def is_unavailable(exc: BaseException) -> bool:
    """True only when Postgres or Redis could not be reached (the client should retry).

    Anything else (a bug, a schema that does not match the code, a bad value) is not: its
    caller logs it with the traceback and answers ``internal``.
    """
    if isinstance(
        exc,
        (
            asyncpg.PostgresConnectionError,  # SQLSTATE 08, and asyncpg's lost connections
            asyncpg.exceptions.OperatorInterventionError,  # 57: shutdown, cannot connect now
            asyncpg.exceptions.TooManyConnectionsError,
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            ConnectionError,
            TimeoutError,
            socket.gaierror,
        ),
    ):
        return True
    if type(exc) is asyncpg.InterfaceError:
        return str(exc).startswith(_CLOSED)
    # A unix socket path that is missing while its server is down is as unreachable as a refusal.
    if isinstance(exc, FileNotFoundError) and exc.filename is None:
        return True
    return type(exc) is OSError and exc.errno in _UNREACHABLE
