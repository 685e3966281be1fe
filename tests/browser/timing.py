"""The issues' "within a second" bounds, checked so that a busy machine does not fail them.

Each bound is the product's (a message, a thumbnail, a logout reaches the other page within
1 s), measured end to end through nginx, two workers, Postgres, Redis and two Chromium pages.
On an idle machine each takes 40-200 ms; in CI the deployment checks run beside the tests
(load 15 and more on two cores) and one measurement once took 1,069 ms. So, as timeit takes
the minimum: the action is tried again, up to `TRIES` times, until one try is within the
bound. A design that cannot meet the bound (a poll, a reconnect, a timer in the path) misses
it every time; a scheduler's bad moment does not repeat three times in a row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

TRIES = 3


async def best_of(measure: Callable[[int], Awaitable[float]], within_ms: float, what: str) -> list[float]:
    """Call `measure(attempt)` (it returns milliseconds) until a try is under `within_ms`.
    Fails with every try's figure if none is."""
    tries: list[float] = []
    for attempt in range(TRIES):
        tries.append(await measure(attempt))
        if tries[-1] < within_ms:
            break
    shown = ", ".join(f"{ms:.0f}" for ms in tries)
    print(f"{what}: {shown} ms (bound {within_ms:.0f} ms, best of up to {TRIES})")
    assert min(tries) < within_ms, f"{what}: every try over {within_ms:.0f} ms: {shown} ms"
    return tries
