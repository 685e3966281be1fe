"""All SQL lives in this package. Stores take an asyncpg pool and return plain dicts."""

from __future__ import annotations

import errno
import socket
from typing import Any

import asyncpg
import redis.exceptions

from chatd.config import database_hosts
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
from chatd.storage.replica import Replica
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
    "Replica",
    "SearchStore",
    "Stores",
    "connect",
    "create_pool",
    "is_unavailable",
]

Pool = asyncpg.Pool


class Stores:
    def __init__(self, pool: Pool, search_language: str = "english", replica: Replica | None = None) -> None:
        self.pool = pool
        # Reads that may go to a streaming replica (storage/replica.py); none: all to `pool`.
        self.replica = replica or Replica(pool)
        self.accounts = AccountStore(pool)
        self.admin = AdminStore(pool)
        self.conversations = ConversationStore(pool)
        self.messages = MessageStore(pool, self.replica)
        self.amends = AmendStore(pool)
        self.receipts = ReceiptStore(pool, self.replica)
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


# A URL with a host list (the primary and its standbys, with target_session_attrs=read-write):
# each host gets this long to answer before the next is tried. asyncpg's own multi-host connect
# has one timeout for the whole list, so a first host that is down without a word (powered
# off: no RST, no ICMP) would use it all and the next host would never be tried.
CONNECT_TIMEOUT_S = 5.0


class _HostList:
    """Connects to the first host of the list that takes the connection (the DSN's
    target_session_attrs decides: read-write skips standbys), starting with the host that took
    the last one: after a failover only the first connection pays for the dead host."""

    def __init__(self, hosts: list[tuple[str, int]]) -> None:
        self.hosts = hosts
        self.first = 0

    async def connect(self, dsn: str, **kwargs: Any) -> asyncpg.Connection:
        failure: Exception | None = None
        for step in range(len(self.hosts)):
            index = (self.first + step) % len(self.hosts)
            host, port = self.hosts[index]
            try:
                conn: asyncpg.Connection = await asyncpg.connect(
                    dsn, host=host, port=port, timeout=CONNECT_TIMEOUT_S, **kwargs
                )
            except Exception as exc:  # as libpq does: any failure moves on to the next host
                failure = exc
                continue
            self.first = index
            return conn
        assert failure is not None
        raise failure


_host_lists: dict[str, _HostList] = {}

# A database host that vanishes (a power cut: no RST, no ICMP) is noticed within seconds, not
# after the kernel's retransmissions (15 minutes): an idle connection is probed after 5 s of
# silence, and a connection whose data goes unacknowledged for 10 s is dropped. Without this,
# every pooled connection to a lost primary holds one request for the whole statement timeout
# and then as long again for asyncpg's cancel request to the same dead host.
KEEPALIVE = ((socket.TCP_KEEPIDLE, 5), (socket.TCP_KEEPINTVL, 2), (socket.TCP_KEEPCNT, 3))
USER_TIMEOUT_MS = 10_000


def _notice_dead_peers(conn: asyncpg.Connection) -> None:
    transport = getattr(conn, "_transport", None)  # asyncpg keeps no public handle on it
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a unix socket has no peer to lose
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in KEEPALIVE:
        sock.setsockopt(socket.IPPROTO_TCP, option, value)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)


async def connect(dsn: str | None = None, **kwargs: Any) -> asyncpg.Connection:
    """asyncpg.connect, with a host list tried host by host (CONNECT_TIMEOUT_S each), on a
    socket that notices a vanished host."""
    hosts = database_hosts(dsn) if dsn else []
    if not dsn or not hosts:
        conn: asyncpg.Connection = await asyncpg.connect(dsn, **kwargs)
    else:
        if dsn not in _host_lists:
            _host_lists[dsn] = _HostList(hosts)
        conn = await _host_lists[dsn].connect(dsn, **kwargs)
    _notice_dead_peers(conn)
    return conn


async def create_pool(dsn: str, min_size: int, max_size: int) -> Pool:
    pool: Pool = await asyncpg.create_pool(
        dsn,
        connect=connect,
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
            # A host list where no host takes writes: the primary restarting, or lost until a
            # standby is promoted.
            asyncpg.exceptions.TargetServerAttributeNotMatched,
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
