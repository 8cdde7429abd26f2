"""Group commit: concurrent submissions share flushes, results and errors reach every caller."""

from __future__ import annotations

import asyncio

import pytest

from notifier.adapters.batching import Batcher


async def test_concurrent_items_share_a_flush_and_get_their_own_results() -> None:
    calls: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.01)
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(flush, max_batch=4)
    assert await batcher.submit(99) == 990  # a lone item is flushed at once, alone
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert calls[0] == [99]
    assert sorted(x for c in calls[1:] for x in c) == list(range(10))
    assert all(len(c) <= 4 for c in calls) and len(calls) <= 4


async def test_a_failed_flush_fails_its_callers_only() -> None:
    async def flush(items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        if 3 in items:
            raise RuntimeError("disk full")
        return items

    batcher: Batcher[int, int] = Batcher(flush, max_batch=1)
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(5)), return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["int", "int", "int", "RuntimeError", "int"]
    with pytest.raises(RuntimeError):
        await batcher.submit(3)
    assert await batcher.submit(4) == 4
