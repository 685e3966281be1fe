"""A session's states and the rules of each, in one place (docs/architecture.md).

    AUTHENTICATING --auth ok, admitted--> SYNCING --`synced` queued--> LIVE
          |                                  |                           |
          +------------- any close ----------+---------> DRAINING <------+
                                                             |
                                                          CLOSED

- AUTHENTICATING: the first frame must be `auth`; nothing is subscribed yet.
- SYNCING: client frames stay unread in the socket until LIVE. Sequenced events of a
  conversation that is catching up are held for it, others delivered; state events are held
  and delivered after `synced`; a `conversation_added` notice is followed after `synced`.
- LIVE: frames are read while sends are in flight, up to the send window; events are
  delivered at once; `conversation_added` is followed at once.
- DRAINING: frames are no longer read; events and notices are dropped (a close is queued).
- CLOSED: the socket is gone.

DRAINING is entered when the server decides to close (revoke 4001, slow consumer 4008,
failure 1011, worker restart 1012) or the peer's close arrives: what is already queued is
still written, in-flight sends still commit, then the socket closes. (A worker that begins
to drain first answers new sends with `shutting_down` while its sessions are still LIVE; the
slow-consumer close is decided by the Connection itself, and the session sees it as a close
code and stops reading.)
"""

from __future__ import annotations

import enum
import logging
from typing import NamedTuple

from chatd import logs, metrics
from chatd.connection import (
    CLOSE_AUTH_TIMEOUT,
    CLOSE_SERVICE_RESTART,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNAVAILABLE,
)
from chatd.errors import ChatdError, Code
from chatd.storage import is_unavailable

log = logging.getLogger("chatd.ws")


class State(enum.Enum):
    AUTHENTICATING = "authenticating"
    SYNCING = "syncing"
    LIVE = "live"
    DRAINING = "draining"
    CLOSED = "closed"

    @property
    def reads_frames(self) -> bool:
        return self is State.LIVE


NEXT: dict[State, frozenset[State]] = {
    State.AUTHENTICATING: frozenset({State.SYNCING, State.DRAINING, State.CLOSED}),
    State.SYNCING: frozenset({State.LIVE, State.DRAINING, State.CLOSED}),
    State.LIVE: frozenset({State.DRAINING, State.CLOSED}),
    State.DRAINING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class Close(NamedTuple):
    code: int
    reason: str


# Every close code a session chooses (docs/protocol.md §6).
AUTH_TIMEOUT = Close(CLOSE_AUTH_TIMEOUT, "no auth frame in time")
RESTARTING = Close(CLOSE_SERVICE_RESTART, "service restart")
TOO_MANY = Close(CLOSE_TOO_MANY_CONNECTIONS, "too many connections")
REVOKED = Close(CLOSE_UNAUTHORIZED, "token revoked")
UNAVAILABLE = Close(CLOSE_UNAVAILABLE, "temporarily unavailable")


def auth_refused(exc: ChatdError) -> Close:
    """A failed `auth`: 4001 with the error code as the reason."""
    return Close(CLOSE_UNAUTHORIZED, exc.code)


def close_for_failure(exc: BaseException, what: str, user_id: int | None = None) -> Close:
    """An exception that ends a session: 1011. Only connectivity errors go unlogged (they are
    expected while Postgres or Redis is away); anything else is a bug and logged with its
    traceback."""
    if is_unavailable(exc):
        logs.throttled(log, "unavailable", what, user_id=user_id, cause=repr(exc))
    else:
        log.error(what, extra={"user_id": user_id}, exc_info=exc)
    return UNAVAILABLE


def frame_failure(exc: BaseException, user_id: int) -> ChatdError:
    """The error reply for a frame that raised something other than a ChatdError: `unavailable`
    for a connectivity error, else `internal`, logged with its traceback."""
    if is_unavailable(exc):
        logs.throttled(log, "unavailable", "unavailable reply", cause=repr(exc))
        return ChatdError(Code.UNAVAILABLE, "try again")
    logs.throttled(log, "internal", "frame failed", user_id=user_id, exc_info=exc)
    metrics.ERRORS.labels("unhandled").inc()
    return ChatdError(Code.INTERNAL, "internal error")
