"""The group-commit dispatcher begins transactions at least ``spacing_s`` apart.

Only the dispatch decision is under test: ``_commit`` is replaced by a function that
notes when a group began and answers it, so no broker is involved.
"""

from __future__ import annotations

import asyncio

import pytest

from common.kafka.transactional import TransactionalPublisher, _Request
from common.settings import CommonSettings


def publisher(*, spacing_s: float) -> tuple[TransactionalPublisher, list]:
    pub = TransactionalPublisher(
        CommonSettings(),
        client_id="test",
        transactional_id="test",
        transaction_timeout_ms=10_000,
        commit_reserve_s=0.1,
        max_group_records=100,
        committers=4,
        spacing_s=spacing_s,
    )
    begun: list[tuple[float, int]] = []

    async def commit(slot: int, group: list[_Request]) -> None:
        begun.append((asyncio.get_running_loop().time(), len(group)))
        for request in group:
            request.answer(None)

    pub._commit = commit  # type: ignore[method-assign]
    return pub, begun


async def publish_three(pub: TransactionalPublisher) -> None:
    """Three one-record requests, 2 ms apart, while producers are idle."""
    pub._dispatcher = asyncio.create_task(pub._dispatch())
    try:
        calls = []
        for n in range(3):
            record = ("topic", f"c{n}", b"{}", [])
            calls.append(asyncio.create_task(pub.publish_each([record], timeout_s=5)))
            await asyncio.sleep(0.002)
        assert await asyncio.gather(*calls) == [[None]] * 3
    finally:
        pub._dispatcher.cancel()


@pytest.mark.parametrize("spacing_s", [0.05, 0.1])
async def test_transactions_begin_spacing_apart(spacing_s: float) -> None:
    pub, begun = publisher(spacing_s=spacing_s)
    await publish_three(pub)
    # The first begins at once; the two that came within the spacing wait and go together.
    assert [size for _, size in begun] == [1, 2]
    assert begun[1][0] - begun[0][0] >= spacing_s - 0.002  # loop clock granularity


async def test_without_spacing_an_idle_producer_begins_at_once() -> None:
    pub, begun = publisher(spacing_s=0.0)
    await publish_three(pub)
    assert [size for _, size in begun] == [1, 1, 1]
    assert begun[2][0] - begun[0][0] < 0.05
