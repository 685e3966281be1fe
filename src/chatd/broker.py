"""The seam under the hub: what fan-out needs from a message broker, and nothing about Redis.

The hub (fanout.py) owns channels' meaning, the registries and the resync; a broker only moves
text between processes. Two publish paths with opposite error policies:

- ``publish_sequenced``: in order, kept and retried until the broker takes it (the source is
  Postgres, so a message past the broker's limit may be dropped as long as every subscriber is
  told to resync);
- ``publish_ephemeral``: never waited for, coalesced by key, dropped on failure.

A broker calls back on the loop: ``on_message`` for each message of a subscribed channel, in
the order they were published (per publishing process), and ``on_resync`` whenever messages may
have been missed (its subscriber reconnected, or some process dropped publishes), after which
everything published is received again.

Implementations: redis_broker.py (production: Redis pub/sub, one subscriber connection per
process) and memory_broker.py (one process, for fast tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

Message = tuple[str, str]  # (channel, payload)
OnMessage = Callable[[str, bytes], None]
OnResync = Callable[[], None]


def ignore_message(channel: str, data: bytes) -> None:
    """A broker's `on_message` before start."""


def ignore_resync() -> None:
    """A broker's `on_resync` before start."""


class Broker(Protocol):
    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None: ...

    async def stop(self, grace_s: float) -> None:
        """Give queued publishes up to `grace_s` to go out, then stop receiving."""

    async def subscribe(self, channels: Sequence[str]) -> None:
        """Returns once `channels`, and every channel subscribed before the call, are active:
        whatever is published from then on is received. Raises if the broker stays away."""

    async def unsubscribe(self, channel: str) -> None:
        """Best effort: a broker failure is not raised (a stray message is ignored anyway)."""

    async def publish_sequenced(self, messages: Sequence[Message]) -> bool:
        """Queue `messages` in this order, after those queued before; True once the broker took
        them within its bounded wait, False if they are still queued (and will go out)."""

    def publish_ephemeral(
        self, messages: Sequence[Message], key: Hashable | None = None
    ) -> asyncio.Future[bool]:
        """Queue `messages` and return at once; a later call with the same `key` replaces them
        if not yet sent. The future says whether the broker took them."""

    @property
    def pending(self) -> int:
        """Sequenced messages queued and not yet taken (a gauge)."""
