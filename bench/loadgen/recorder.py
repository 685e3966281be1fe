"""What one load-generator process measured: acks and deliveries per step, in milliseconds.

Every payload body is ``B|<step>|<scheduled send time>|padding``: latency is taken from the
*scheduled* send time (CLOCK_MONOTONIC is shared by every process on the box), so a late
sender does not hide queueing delay (no coordinated omission).
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field
from typing import Any

now = time.monotonic


def body(step: int, sched: float, pad: str) -> str:
    return f"B|{step}|{sched:.6f}|{pad}"


@dataclass
class StepData:
    sent: int = 0
    acked: int = 0
    errors: int = 0
    delivered: int = 0
    ack_ms: array[float] = field(default_factory=lambda: array("d"))
    deliver_ms: array[float] = field(default_factory=lambda: array("d"))
    error_samples: list[str] = field(default_factory=list)
    send_lag_max_ms: float = 0.0


class Recorder:
    def __init__(self) -> None:
        self.steps: dict[int, StepData] = {}
        self.pending: dict[Any, tuple[int, float]] = {}
        self.last_acked: dict[Any, int] = {}
        self.unattributed = 0

    def open(self, step: int) -> StepData:
        return self.steps.setdefault(step, StepData())

    def close(self, step: int) -> StepData:
        data = self.steps.pop(step, StepData())
        for key in [k for k, (s, _) in self.pending.items() if s == step]:
            del self.pending[key]
        return data

    def sent(self, key: Any, step: int, sched: float) -> None:
        self.pending[key] = (step, sched)
        data = self.steps.get(step)
        if data is not None:
            data.sent += 1
            lag = (now() - sched) * 1000
            if lag > data.send_lag_max_ms:
                data.send_lag_max_ms = lag

    def ack(self, key: Any, at: float, target: Any = None, seq: int | None = None) -> None:
        if seq is not None and seq > self.last_acked.get(target, 0):
            self.last_acked[target] = seq
        found = self.pending.pop(key, None)
        if found is None:
            return
        data = self.steps.get(found[0])
        if data is not None:
            data.acked += 1
            data.ack_ms.append((at - found[1]) * 1000)

    def error(self, key: Any, detail: str) -> None:
        found = self.pending.pop(key, None)
        data = self.steps.get(found[0]) if found else None
        if data is None:
            self.unattributed += 1
            return
        data.errors += 1
        if len(data.error_samples) < 5:
            data.error_samples.append(detail[:200])

    def delivered(self, text: str, at: float) -> None:
        parts = text.split("|", 3)
        if len(parts) < 3 or parts[0] != "B":
            return
        data = self.steps.get(int(parts[1]))
        if data is not None:
            data.delivered += 1
            data.deliver_ms.append((at - float(parts[2])) * 1000)
