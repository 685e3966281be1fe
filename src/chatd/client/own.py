"""My own messages once stored, by seq, and the states they go through: saved, delivered (to
K of N), read (by K of N), deleted; each change is written once, never back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatd.client.lines import short

Frame = dict[str, Any]


@dataclass
class Own:
    client_msg_id: str
    body: str
    seq: int | None = None
    state: str = "pending"
    files: list[Frame] = field(default_factory=list)  # uploaded, sent with the message


class OwnMessages(dict[int, Own]):
    def __init__(self, out: Callable[[str], None], name: Callable[[int | None], str]) -> None:
        super().__init__()
        self._out = out
        self._name = name

    def last(self) -> int | None:
        return max((seq for seq, own in self.items() if own.state != "deleted"), default=None)

    def _upto(self, seq: int) -> list[Own]:
        return sorted((o for s, o in self.items() if s <= seq), key=lambda o: o.seq or 0)

    def read_by_peer(self, user_id: int, seq: int) -> None:
        for own in self._upto(seq):
            if own.state not in ("read", "deleted"):
                own.state = "read"
                self._out(f"  ✓✓ read by {self._name(user_id)}: {short(own.body)}")

    def delivered_to_peer(self, user_id: int, seq: int) -> None:
        for own in self._upto(seq):
            if own.state == "saved":  # never back from read
                own.state = "delivered"
                self._out(f"  ✓ delivered to {self._name(user_id)}: {short(own.body)}")

    def counts(self, counts: list[Frame]) -> None:
        """A group's `receipts` event (docs/protocol.md §4.7)."""
        for count in counts:
            own = self.get(count["seq"])
            delivered = max(count.get("delivered_to", 0), count["read_by"])
            if count["read_by"]:
                state, mark = f"read by {count['read_by']} of {count['of']}", "✓✓"
            else:
                state, mark = f"delivered to {delivered} of {count['of']}", "✓"
            if own is not None and delivered and own.state not in (state, "deleted"):
                own.state = state
                self._out(f"  {mark} {state}: {short(own.body)}")

    def changed(self, event: Frame, when: str, who: str) -> None:
        """An edit or delete of the message at `ref_seq`: written as a line of its own."""
        own = self.get(event["ref_seq"])
        if event["kind"] == "edit":
            if own is not None:
                own.body = event["body"]
            self._out(f"{when} * {who} edited a message: {event['body']}")
        else:
            if own is not None:
                own.state = "deleted"
            self._out(f"{when} * {who} deleted a message")
