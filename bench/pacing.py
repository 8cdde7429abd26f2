"""Pure helpers of the latency benchmarks: an open-loop schedule and percentiles.

No I/O and no broker: ``tests/unit/test_bench_pacing.py`` checks them with a fake clock.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence


def percentile(values: Sequence[float], p: int) -> float:
    """The ``p``-th percentile (1 to 99) of ``values``: ``statistics.quantiles``, inclusive
    method (linear interpolation between the closest ranks, the minimum and maximum
    being the 0th and 100th). ValueError for fewer than two values or ``p`` outside 1-99."""
    if not 1 <= p <= 99:
        raise ValueError(f"percentile {p}: must be between 1 and 99")
    if len(values) < 2:
        raise ValueError(f"percentile of {len(values)} value(s): at least 2 are needed")
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


async def paced(
    count: int,
    rate: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[tuple[int, float]]:
    """Yield ``(i, due)`` for i in 0..count-1, item i at ``due = start + i / rate``.

    Open loop: the schedule is fixed at the start (``start`` is the clock's reading at
    the first item), whatever the consumer of the items does in between; an item whose
    time has passed is yielded at once, none is skipped, so a slow stretch shows as a
    burst afterwards rather than as fewer items.
    """
    if rate <= 0:
        raise ValueError(f"rate {rate}: must be positive")
    start = clock()
    for i in range(count):
        due = start + i / rate
        wait = due - clock()
        if wait > 0:
            await sleep(wait)
        yield i, due
