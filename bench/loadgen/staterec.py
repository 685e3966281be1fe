"""What one load-generator process measured of state events: read marks and presence (scenario 5).

Latency is taken at the receiving socket from the *scheduled* time of the action that caused
the event (open loop, as for messages in recorder.py):
- read ack: a `read` frame's scheduled send -> its `read_state` reply (matched by `ref`);
- receipt: the same scheduled send -> the first `receipts` event, at a device of the message's
  sender in this process, whose `read_by` for that seq reaches the mark's place in its group's
  round (marks go round-robin, so mark k of a round is the (k+1)-th reader of that seq);
- presence: a churning user's scheduled connect / idle / close -> an observer's `presence`
  event `online` / `away` / `offline` for that user.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from bench.loadgen.recorder import now

STATUSES = ("online", "away", "offline")


def _ms() -> array[float]:
    return array("d")


@dataclass
class StateStep:
    marks: int = 0
    read_acks: int = 0
    errors: int = 0
    receipt_events: int = 0
    presence_events: int = 0
    read_ack_ms: array[float] = field(default_factory=_ms)
    receipt_ms: array[float] = field(default_factory=_ms)
    connect_ms: array[float] = field(default_factory=_ms)
    presence_ms: dict[str, array[float]] = field(default_factory=lambda: {s: _ms() for s in STATUSES})
    connected: int = 0
    connect_failed: int = 0
    error_samples: list[str] = field(default_factory=list)
    send_lag_max_ms: float = 0.0

    def lag(self, sched: float) -> None:
        self.send_lag_max_ms = max(self.send_lag_max_ms, (now() - sched) * 1000)

    def error(self, detail: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(detail[:200])


class StateRecorder:
    """One step at a time (scenario 5 runs its steps one after another)."""

    def __init__(self) -> None:
        self.step = StateStep()
        self.acks: dict[str, float] = {}
        self.receipts_wanted: dict[tuple[int, int], list[tuple[int, float]]] = {}
        self.presence_wanted: dict[int, dict[str, float]] = {}

    def open(self, presence_wanted: dict[int, dict[str, float]] | None = None) -> StateStep:
        self.step = StateStep()
        self.acks.clear()
        self.receipts_wanted.clear()
        self.presence_wanted = presence_wanted or {}
        return self.step

    def close(self) -> dict[str, Any]:
        """End the step: its counts, latency arrays (bytes of array('d'), ms) and what never came."""
        missing = {"acks": len(self.acks), "receipts": sum(len(w) for w in self.receipts_wanted.values())}
        step = self.step
        self.open()
        return {
            "marks": step.marks,
            "read_acks": step.read_acks,
            "errors": step.errors,
            "receipt_events": step.receipt_events,
            "presence_events": step.presence_events,
            "read_ack_ms": step.read_ack_ms.tobytes(),
            "receipt_ms": step.receipt_ms.tobytes(),
            "connect_ms": step.connect_ms.tobytes(),
            "presence_ms": {s: a.tobytes() for s, a in step.presence_ms.items()},
            "connected": step.connected,
            "connect_failed": step.connect_failed,
            "error_samples": step.error_samples,
            "send_lag_max_ms": round(step.send_lag_max_ms, 2),
            "missing": missing,
        }

    # -- read marks ----------------------------------------------------------------------
    def mark_sent(self, key: str, sched: float, cid: int, seq: int, need: int) -> None:
        self.step.marks += 1
        self.step.lag(sched)
        self.acks[key] = sched
        self.receipts_wanted.setdefault((cid, seq), []).append((need, sched))

    def read_state(self, ref: str, at: float) -> None:
        sched = self.acks.pop(ref, None)
        if sched is not None:
            self.step.read_acks += 1
            self.step.read_ack_ms.append((at - sched) * 1000)

    def error(self, ref: str, detail: str) -> bool:
        """An `error` answering one of this step's marks (True), or someone else's (False)."""
        if self.acks.pop(ref, None) is None:
            return False
        self.step.error(detail)
        return True

    def receipts(self, cid: int, counts: list[dict[str, Any]], at: float) -> None:
        self.step.receipt_events += 1
        for entry in counts:
            wanted = self.receipts_wanted.get((cid, entry["seq"]))
            if not wanted:
                continue
            read_by = entry["read_by"]
            keep = []
            for need, sched in wanted:
                if need <= read_by:
                    self.step.receipt_ms.append((at - sched) * 1000)
                else:
                    keep.append((need, sched))
            if keep:
                self.receipts_wanted[(cid, entry["seq"])] = keep
            else:
                del self.receipts_wanted[(cid, entry["seq"])]

    # -- presence ------------------------------------------------------------------------
    def presence(self, uid: int, status: str, at: float) -> None:
        sched = self.presence_wanted.get(uid, {}).get(status)
        if sched is not None:
            self.step.presence_events += 1
            self.step.presence_ms[status].append((at - sched) * 1000)
