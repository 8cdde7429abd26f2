"""The notifier's consumer loop with a fake consumer: order, overlap, commits, errors."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from common.kafka import DeadLetters, FakePublisher, Record
from common.messages import Notification
from notifier.entrypoints.deliver import consume

TP = ("notifications", 0)
OTHER = ("notifications", 1)


@dataclass
class Raw:
    """What ``Record.from_consumer`` reads of an aiokafka ConsumerRecord."""

    key: bytes
    offset: int
    partition: int = 0
    topic: str = "notifications"
    value: bytes = b"{}"
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0


@dataclass
class FakeConsumer:
    polls: list[dict[Any, list[Raw]]]
    assigned: set[Any] = field(default_factory=lambda: {TP, OTHER})
    commits: list[dict[Any, int]] = field(default_factory=list)
    polled: int = 0

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Raw]]:
        if self.polls:
            self.polled += 1
            return self.polls.pop(0)
        await asyncio.sleep(0.01)
        return {}

    async def commit(self, offsets: dict[Any, int] | None = None) -> None:
        assert offsets is not None, "the loop commits explicit offsets"
        self.commits.append(dict(offsets))

    def assignment(self) -> set[Any]:
        return self.assigned


def dlq() -> DeadLetters:
    return DeadLetters(FakePublisher(), consumer_name="unit")


async def run_until(consumer: FakeConsumer, handle: Any, done: asyncio.Event, **kw: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(consume(consumer, handle, dlq(), stop=stop, concurrency=8, **kw))
    await asyncio.wait_for(done.wait(), 5)
    stop.set()
    await asyncio.wait_for(loop, 5)


async def test_one_customer_stays_in_order_across_overlapping_batches() -> None:
    consumer = FakeConsumer(
        polls=[
            {TP: [Raw(b"a", 0), Raw(b"b", 1)]},
            {TP: [Raw(b"a", 2), Raw(b"c", 3)]},
        ]
    )
    seen: list[tuple[str | None, int]] = []
    polled_while_a0_ran: list[int] = []
    done = asyncio.Event()

    async def handle(record: Record) -> None:
        if record.offset == 0:
            await asyncio.sleep(0.05)  # a slow first send: the next batch is polled meanwhile
            polled_while_a0_ran.append(consumer.polled)
        seen.append((record.key, record.offset))
        if len(seen) == 4:
            done.set()

    await run_until(consumer, handle, done)
    assert polled_while_a0_ran == [2]
    assert seen.index(("a", 0)) < seen.index(("a", 2))
    assert seen.index(("c", 3)) < seen.index(("a", 0))  # another customer did not wait
    assert consumer.commits == [{TP: 2}, {TP: 4}]  # in order, each after its batch


async def test_a_later_batch_is_not_committed_before_an_earlier_one() -> None:
    consumer = FakeConsumer(polls=[{TP: [Raw(b"a", 0)]}, {OTHER: [Raw(b"b", 0, partition=1)]}])
    release = asyncio.Event()
    done = asyncio.Event()
    commits_while_waiting: list[list[dict[Any, int]]] = []

    async def handle(record: Record) -> None:
        if record.key == "a":
            await release.wait()
            done.set()
        else:
            await asyncio.sleep(0.05)
            commits_while_waiting.append(list(consumer.commits))
            release.set()

    await run_until(consumer, handle, done)
    assert commits_while_waiting == [[]]
    assert consumer.commits == [{TP: 1}, {OTHER: 1}]


async def test_offsets_of_a_partition_no_longer_assigned_are_not_committed() -> None:
    consumer = FakeConsumer(
        polls=[{TP: [Raw(b"a", 4)], OTHER: [Raw(b"b", 9, partition=1)]}], assigned={OTHER}
    )
    done = asyncio.Event()
    handled: list[int] = []

    async def handle(record: Record) -> None:
        handled.append(record.offset)
        if len(handled) == 2:
            done.set()

    await run_until(consumer, handle, done)
    assert consumer.commits == [{OTHER: 10}]


async def test_an_error_propagates_and_leaves_its_batch_and_later_ones_uncommitted() -> None:
    consumer = FakeConsumer(
        polls=[
            {TP: [Raw(b"a", 0), Raw(b"b", 1), Raw(b"d", 2)]},
            {TP: [Raw(b"a", 3), Raw(b"c", 4)]},
        ]
    )
    attempts: list[int] = []
    handled: list[int] = []
    cancelled: set[str | None] = set()

    async def handle(record: Record) -> None:
        if record.offset == 0:
            attempts.append(0)
            raise RuntimeError("database down")
        if record.key in ("c", "d"):  # still running when a fails: in its batch, and later
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.add(record.key)
                raise
        handled.append(record.offset)

    stop = asyncio.Event()
    with pytest.raises(RuntimeError, match="database down"):
        await asyncio.wait_for(
            consume(
                consumer, handle, dlq(), stop=stop, concurrency=8, max_attempts=3, backoff_s=0.001
            ),
            5,
        )
    assert attempts == [0, 0, 0]
    assert consumer.commits == []
    assert 3 not in handled  # the same customer's next record waited, then was dropped
    assert cancelled == {"c", "d"}


async def test_an_undecodable_record_goes_to_the_dead_letter_topic() -> None:
    consumer = FakeConsumer(polls=[{TP: [Raw(b"a", 0, value=b"not json"), Raw(b"b", 1)]}])
    publisher = FakePublisher()
    done = asyncio.Event()

    async def handle(record: Record) -> None:
        if record.offset == 0:
            Notification.model_validate_json(record.value)
        done.set()

    stop = asyncio.Event()
    loop = asyncio.create_task(
        consume(
            consumer,
            handle,
            DeadLetters(publisher, consumer_name="unit"),
            stop=stop,
            concurrency=8,
        )
    )
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert [r.topic for r in publisher.records] == ["notifications.dlq"]
    assert consumer.commits == [{TP: 2}]
