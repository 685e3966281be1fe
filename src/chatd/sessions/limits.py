"""Per-connection limits on state frames (`presence`, `typing`): what one socket may make the
server publish, whatever the number of its user's conversations (docs/protocol.md §4.9, §4.10)."""

from __future__ import annotations

WINDOW_S = 10.0  # CHATD_PRESENCE_FRAME_RATE_LIMIT and CHATD_TYPING_FRAME_RATE_LIMIT count per this


class Window:
    """At most `limit` actions per fixed window of WINDOW_S, starting at the first action."""

    __slots__ = ("count", "limit", "start")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.start = -WINDOW_S
        self.count = 0

    def take(self, now: float) -> bool:
        """Count one action at `now` (monotonic); False if the window is full."""
        if now - self.start >= WINDOW_S:
            self.start, self.count = now, 0
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def ends(self) -> float:
        return self.start + WINDOW_S
