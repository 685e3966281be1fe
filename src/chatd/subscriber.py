"""What the hub delivers to: one connection's session (sessions/), seen from below.

The hub (fanout.py) holds subscribers and calls only these methods; it never calls up into the
WebSocket transport or the sessions layer by name, so the imports point one way.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

Event = dict[str, Any]


class Subscriber(Protocol):
    @property
    def id(self) -> str: ...  # unique per connection (presence keys connections by it)

    @property
    def user_id(self) -> int: ...

    @property
    def token_hash(self) -> bytes: ...

    @property
    def share_read_state(self) -> bool: ...  # as the session last heard (notices rebuilds compare)

    @property
    def close_code(self) -> int | None: ...  # None while open

    @property
    def queued(self) -> int: ...  # frames waiting to be written (a gauge)

    @property
    def conversations(self) -> Collection[int]: ...  # the conversations it follows

    @property
    def followed(self) -> Collection[int]: ...  # the users whose presence it follows

    def deliver(self, cid: int, seq: int, text: str, event: Event) -> None:
        """A sequenced event, in seq order without gaps (the topic guarantees it)."""

    def broadcast(self, text: str, event: Event) -> None:
        """An ephemeral state event of a conversation it follows (receipts, typing, and the
        presence of a member who just took part in it)."""

    def presence(self, text: str, event: Event) -> None:
        """A presence change of a user it follows."""

    def members_changed(self, cid: int) -> None:
        """A membership event of a conversation it follows, small enough (before or after) to
        change whose presence it may follow; called after `deliver` of that event."""

    def notice(self, payload: dict[str, Any]) -> None:
        """A per-user control message (conversation added, read state, settings, revoke)."""

    def close(self, code: int, reason: str = "") -> None:
        """Close after what is already queued (a worker drain)."""

    async def wait_closed(self) -> None: ...
