"""Latency summaries from raw samples (exact percentiles over sorted arrays, milliseconds)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence; q in [0, 100]."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(samples: Sequence[float]) -> dict[str, float | int | None]:
    ordered = sorted(samples)

    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {
        "n": len(ordered),
        "p50": r(percentile(ordered, 50)),
        "p99": r(percentile(ordered, 99)),
        "p999": r(percentile(ordered, 99.9)),
        "max": r(ordered[-1] if ordered else None),
    }
