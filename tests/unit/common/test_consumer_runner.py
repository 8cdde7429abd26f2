"""The consumer runner's strategies on the memory broker: order, overlap, commits, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from common.kafka import (
    DeadLetters,
    FakeConsumer,
    FakePublisher,
    KeyedParallel,
    MemoryBroker,
    Partition,
    Record,
    Sequential,
    Strategy,
    partition_for,
    run_consumer,
)
from common.messages import Notification
from common.outage import DatabaseUnavailable

TOPIC = "t.notifications"
FAST = {"first_wait_s": 0.001, "longest_wait_s": 0.002}


def key_on(partition: int, partitions: int, avoid: tuple[str, ...] = ()) -> str:
    """A key that the murmur2 mapping puts on ``partition``."""
    return next(
        k
        for i in range(1000)
        if (k := f"k{i}") not in avoid and partition_for(k.encode(), partitions) == partition
    )


class Recording(FakeConsumer):
    """A memory consumer that notes its polls that returned records, and its commits."""

    def __init__(self, broker: MemoryBroker, **kw: Any) -> None:
        super().__init__(broker, [TOPIC], group_id=kw.pop("group_id", "g"), **kw)
        self.polled = 0
        self.commits: list[dict[Partition, int]] = []

    async def poll(self, *, timeout_s: float, max_records: int) -> list[Record]:
        records = await super().poll(timeout_s=timeout_s, max_records=max_records)
        self.polled += bool(records)
        return records

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        await super().commit(offsets)
        self.commits.append(dict(offsets))


def setup(
    partitions: int = 1, keys: list[str] | None = None, values: dict[int, bytes] | None = None
) -> tuple[MemoryBroker, FakePublisher]:
    broker = MemoryBroker(partitions=partitions)
    broker.create_topic(TOPIC)
    publisher = FakePublisher(broker=broker)
    for i, key in enumerate(keys or []):
        broker.append(TOPIC, key, (values or {}).get(i, b"{}"))
    return broker, publisher


async def run_until(
    consumer: FakeConsumer,
    handle: Any,
    done: asyncio.Event,
    *,
    publisher: FakePublisher | None = None,
    strategy: Strategy | None = None,
    **kw: Any,
) -> None:
    stop = asyncio.Event()
    await consumer.start()
    loop = asyncio.create_task(
        run_consumer(
            consumer,
            handle,
            DeadLetters(publisher or FakePublisher(), consumer_name="unit"),
            stop=stop,
            name="unit",
            strategy=strategy or KeyedParallel(concurrency=8),
            **{**FAST, **kw},
        )
    )
    await asyncio.wait_for(done.wait(), 5)
    stop.set()
    await asyncio.wait_for(loop, 5)


async def test_one_key_stays_in_order_across_overlapping_batches() -> None:
    broker, _ = setup(keys=["a", "b", "a", "c"])
    consumer = Recording(broker)
    seen: list[tuple[str | None, int]] = []
    polled_while_a0_ran: list[int] = []
    done = asyncio.Event()

    async def handle(record: Record) -> None:
        if record.offset == 0:
            await asyncio.sleep(0.05)  # a slow first record: the next batch is polled meanwhile
            polled_while_a0_ran.append(consumer.polled)
        seen.append((record.key, record.offset))
        if len(seen) == 4:
            done.set()

    await run_until(consumer, handle, done, poll_records=2)
    assert polled_while_a0_ran == [2]
    assert seen.index(("a", 0)) < seen.index(("a", 2))
    assert seen.index(("c", 3)) < seen.index(("a", 0))  # another key did not wait
    assert consumer.commits == [{(TOPIC, 0): 2}, {(TOPIC, 0): 4}]  # in order, each after its batch


async def test_at_most_two_batches_in_flight_and_concurrency_records() -> None:
    broker, _ = setup(keys=[f"k{i}" for i in range(6)])
    consumer = Recording(broker)
    release = asyncio.Event()
    running: list[int] = []
    most = 0
    done = asyncio.Event()

    async def handle(record: Record) -> None:
        nonlocal most
        running.append(record.offset)
        most = max(most, len(running))
        await release.wait()
        running.remove(record.offset)
        if record.offset == 5:
            done.set()

    task = asyncio.create_task(
        run_until(consumer, handle, done, strategy=KeyedParallel(concurrency=1), poll_records=1)
    )
    await asyncio.sleep(0.1)
    assert (consumer.polled, most) == (2, 1)  # two batches polled, one record at a time
    release.set()
    await task
    assert consumer.commits[-1] == {(TOPIC, 0): 6}


async def test_a_later_batch_is_not_committed_before_an_earlier_one() -> None:
    a, b = key_on(0, 2), key_on(1, 2)
    broker, _ = setup(partitions=2, keys=[a])
    consumer = Recording(broker)
    release = asyncio.Event()
    done = asyncio.Event()
    commits_while_waiting: list[list[dict[Partition, int]]] = []

    async def handle(record: Record) -> None:
        if record.key == a:
            broker.append(TOPIC, b, b"{}")  # the next batch, polled while this one waits
            await release.wait()
            done.set()
        else:
            await asyncio.sleep(0.05)
            commits_while_waiting.append(list(consumer.commits))
            release.set()

    await run_until(consumer, handle, done)
    assert commits_while_waiting == [[]]
    assert consumer.commits == [{(TOPIC, 0): 1}, {(TOPIC, 1): 1}]


async def test_offsets_of_a_partition_no_longer_assigned_are_not_committed() -> None:
    a, b = key_on(0, 2), key_on(1, 2)
    broker, _ = setup(partitions=2, keys=[a, b])
    consumer = Recording(broker)
    other = FakeConsumer(broker, [TOPIC], group_id="g")
    done = asyncio.Event()
    handled: list[str | None] = []

    async def handle(record: Record) -> None:
        handled.append(record.key)
        if len(handled) == 2:
            await other.start()  # a second member joins: partition 1 is its own now
            done.set()

    await run_until(consumer, handle, done)
    assert other.assignment() == {(TOPIC, 1)}
    assert consumer.commits == [{(TOPIC, 0): 1}]
    assert broker.committed("g", TOPIC, 1) is None


async def test_an_error_propagates_and_leaves_its_batch_and_later_ones_uncommitted() -> None:
    broker, _ = setup(keys=["a", "b", "d", "a", "c"])
    consumer = Recording(broker)
    await consumer.start()
    attempts: list[int] = []
    handled: list[int] = []
    cancelled: set[str | None] = set()

    async def handle(record: Record) -> None:
        if record.offset == 0:
            attempts.append(0)
            raise RuntimeError("a bug")
        if record.key in ("c", "d"):  # still running when a fails: in its batch, and later
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.add(record.key)
                raise
        handled.append(record.offset)

    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(
            run_consumer(
                consumer,
                handle,
                DeadLetters(FakePublisher(), consumer_name="unit"),
                stop=asyncio.Event(),
                name="unit",
                strategy=KeyedParallel(concurrency=8),
                attempts=3,
                poll_records=3,
                **FAST,
            ),
            5,
        )
    assert attempts == [0, 0, 0]
    assert consumer.commits == []
    assert 3 not in handled  # the same key's next record waited, then was dropped
    assert cancelled == {"c", "d"}


@pytest.mark.parametrize("strategy", [Sequential(), KeyedParallel(concurrency=4)], ids=str)
async def test_an_invalid_record_goes_to_the_dead_letter_topic_with_the_error(
    strategy: Strategy,
) -> None:
    broker, publisher = setup(keys=["a", "b"], values={0: b"not json"})
    consumer = Recording(broker)
    handled: list[int] = []
    done = asyncio.Event()

    async def handle(record: Record) -> None:
        Notification.model_validate_json(record.value) if record.offset == 0 else None
        handled.append(record.offset)
        done.set()

    await run_until(consumer, handle, done, publisher=publisher, strategy=strategy)
    [dead] = broker.records(f"{TOPIC}.dlq")
    headers = dict(dead.headers)
    assert (dead.key, dead.value, handled) == ("a", b"not json", [1])
    assert headers["dlq.error"].startswith(b"ValidationError")
    assert headers["dlq.topic"] == TOPIC.encode()
    assert (headers["dlq.partition"], headers["dlq.offset"]) == (b"0", b"0")
    assert headers["dlq.consumer"] == b"unit"
    assert consumer.commits == [{(TOPIC, 0): 2}]


@pytest.mark.parametrize("strategy", [Sequential(), KeyedParallel(concurrency=4)], ids=str)
async def test_a_database_outage_is_waited_out_on_the_record(strategy: Strategy) -> None:
    broker, publisher = setup(keys=["a", "b"])
    consumer = Recording(broker)
    calls: list[int] = []
    done = asyncio.Event()

    async def handle(record: Record) -> None:
        calls.append(record.offset)
        if record.offset == 0 and calls.count(0) <= 10:  # more than the 5 attempts
            raise DatabaseUnavailable("connection refused")
        if 0 in calls and 1 in calls and calls.count(0) > 10:
            done.set()

    await run_until(consumer, handle, done, publisher=publisher, strategy=strategy)
    assert calls.count(0) == 11 and publisher.records == []  # nothing dead-lettered
    assert consumer.commits == [{(TOPIC, 0): 2}]


async def test_stopped_during_an_outage_it_returns_uncommitted() -> None:
    broker, _ = setup(keys=["a"])
    consumer = Recording(broker)
    await consumer.start()
    stop = asyncio.Event()
    failing = asyncio.Event()

    async def handle(record: Record) -> None:
        failing.set()
        raise DatabaseUnavailable("connection refused")

    loop = asyncio.create_task(
        run_consumer(
            consumer,
            handle,
            DeadLetters(FakePublisher(), consumer_name="unit"),
            stop=stop,
            name="unit",
            first_wait_s=0.01,
            longest_wait_s=0.05,
        )
    )
    await asyncio.wait_for(failing.wait(), 5)
    stop.set()
    await asyncio.wait_for(loop, 5)  # returns, no error
    assert consumer.commits == []


async def test_sequential_keeps_the_polled_order_and_retries_other_errors() -> None:
    keys = [key_on(i % 3, 3) for i in range(9)]
    broker, _ = setup(partitions=3)
    for i, key in enumerate(keys):
        broker.append(TOPIC, key, str(i).encode())
    consumer = Recording(broker)
    seen: list[bytes] = []
    failures = {b"4": 2}  # fails twice, succeeds at the third of five attempts
    done = asyncio.Event()

    async def handle(record: Record) -> None:
        if failures.get(record.value, 0):
            failures[record.value] -= 1
            raise RuntimeError("flaky")
        seen.append(record.value)
        if len(seen) == 9:
            done.set()

    await run_until(consumer, handle, done, strategy=Sequential())
    assert sorted(seen) == sorted(str(i).encode() for i in range(9))
    for p in range(3):  # each partition in offset order
        mine = [v for v in seen if partition_for(keys[int(v)].encode(), 3) == p]
        assert mine == sorted(mine, key=int)
    assert {where: o for c in consumer.commits for where, o in c.items()} == {
        (TOPIC, p): 3 for p in range(3)
    }
