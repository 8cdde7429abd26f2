"""bench.pacing: the open-loop schedule and the percentiles of the latency benchmarks."""

from __future__ import annotations

import asyncio

import pytest

from bench.pacing import paced, percentile


class FakeClock:
    """A clock that only moves when slept on, or when ``lag`` is added by the test."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(list(reversed(values)), 99) == pytest.approx(99.01)  # order-free
    assert percentile([10.0, 20.0], 50) == pytest.approx(15.0)


def test_percentile_refuses_what_it_cannot_answer() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        percentile([1.0], 50)
    with pytest.raises(ValueError, match="between 1 and 99"):
        percentile([1.0, 2.0], 100)


def test_items_come_at_start_plus_i_over_rate() -> None:
    clock = FakeClock()

    async def collect() -> list[tuple[int, float, float]]:
        return [(i, due, clock()) async for i, due in paced(5, 4.0, clock=clock, sleep=clock.sleep)]

    got = asyncio.run(collect())
    assert [i for i, _, _ in got] == [0, 1, 2, 3, 4]
    assert [due for _, due, _ in got] == pytest.approx([100.0, 100.25, 100.5, 100.75, 101.0])
    assert [at for _, _, at in got] == pytest.approx([100.0, 100.25, 100.5, 100.75, 101.0])


def test_a_late_consumer_gets_the_missed_items_at_once_none_skipped() -> None:
    clock = FakeClock()

    async def collect() -> list[tuple[int, float]]:
        out = []
        async for i, _due in paced(6, 10.0, clock=clock, sleep=clock.sleep):
            out.append((i, clock()))
            if i == 1:
                clock.now += 0.35  # the consumer stalls past items 2, 3 and 4's times
        return out

    got = asyncio.run(collect())
    assert [i for i, _ in got] == [0, 1, 2, 3, 4, 5]
    # 2, 3 and 4 were due at 100.2, 100.3 and 100.4: all given at once at 100.45;
    # 5 keeps its place in the schedule (100.5), it is not shifted by the stall
    assert [at for _, at in got] == pytest.approx([100.0, 100.1, 100.45, 100.45, 100.45, 100.5])


def test_rate_must_be_positive() -> None:
    async def first() -> None:
        async for _ in paced(1, 0.0):
            pass

    with pytest.raises(ValueError, match="positive"):
        asyncio.run(first())
