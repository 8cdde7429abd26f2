"""One contract, two brokers: the memory broker and the real one behave alike where the
services rely on it.

Every test runs twice, against ``MemoryBroker`` (with ``FakePublisher`` and
``FakeConsumer``) and against the stack's Kafka broker (``KafkaPublisher``,
``KafkaConsumer``, ``FencedProducer``), through the same consumer runner: a key's
records in order on the key's murmur2 partition, commits and resuming from them,
dead letters with their headers, records consumed again when nothing was committed,
and transactional batches with the offsets after them. Unit tests may then trust the
memory broker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from common.kafka import (
    Consumer,
    DeadLetters,
    FakeConsumer,
    FakePublisher,
    FencedProducer,
    InvalidRecord,
    KafkaPublisher,
    KeyedParallel,
    MemoryBroker,
    OutgoingRecord,
    Partition,
    Record,
    Sequential,
    Strategy,
    ensure_topics,
    make_consumer,
    partition_for,
    read_topic,
    run_consumer,
)
from common.settings import CommonSettings
from common.topics import Topic, dlq_name, topic_name

STRATEGIES = [Sequential(), KeyedParallel(concurrency=4)]
FAST = {"first_wait_s": 0.01, "longest_wait_s": 0.05}


@dataclass
class Bus:
    """A broker of one kind, with topics of a prefix of its own."""

    kind: str
    prefix: str
    partitions: int
    settings: CommonSettings | None = None
    broker: MemoryBroker | None = None

    async def topic(self, topic: Topic) -> str:
        """Create ``topic`` and its dead-letter topic; the topic's name."""
        name = topic_name(topic, self.prefix)
        if self.broker is not None:
            self.broker.create_topic(name)
            self.broker.create_topic(dlq_name(name))
        else:
            assert self.settings is not None
            await ensure_topics(self.settings, [topic])
        return name

    @asynccontextmanager
    async def publisher(self) -> AsyncIterator[KafkaPublisher | FakePublisher]:
        if self.broker is not None:
            yield FakePublisher(prefix=self.prefix, broker=self.broker)
        else:
            assert self.settings is not None
            async with KafkaPublisher(self.settings, client_id="contract") as publisher:
                yield publisher

    async def publish_batch(self, records: Sequence[OutgoingRecord]) -> dict[Partition, int]:
        """Write ``records`` in one transaction; the offsets after them."""
        if self.broker is not None:
            return await FakePublisher(prefix=self.prefix, broker=self.broker).publish_batch(
                records
            )
        assert self.settings is not None
        producer = FencedProducer(
            self.settings, client_id="contract", transactional_id=f"{self.prefix}relay"
        )
        await producer.start()
        try:
            return await producer.publish_batch(records)
        finally:
            await producer.stop()

    def consumer(self, topic: str, group: str) -> Consumer:
        if self.broker is not None:
            return FakeConsumer(self.broker, [topic], group_id=group)
        assert self.settings is not None
        return make_consumer(self.settings, [topic], group_id=group)

    async def read(self, topic: str, at_least: int) -> list[Record]:
        """Every committed record of ``topic``, once there are ``at_least`` (a transaction
        commits before its markers are written: the records become visible after it)."""
        if self.broker is not None:
            return self.broker.records(topic)
        assert self.settings is not None
        async with asyncio.timeout(30):
            while len(records := (await read_topic(self.settings, topic))[0]) < at_least:
                await asyncio.sleep(0.1)
        return records


@pytest.fixture(params=["memory", "kafka"])
def bus(request: pytest.FixtureRequest) -> Bus:
    prefix = f"contract-{uuid.uuid4().hex[:8]}."
    if request.param == "memory":
        return Bus("memory", prefix, 3, broker=MemoryBroker(partitions=3))
    common: CommonSettings = request.getfixturevalue("common_settings")
    settings = common.model_copy(update={"topic_prefix": prefix})
    return Bus("kafka", prefix, settings.topic_partitions, settings=settings)


async def consume(
    bus: Bus,
    topic: str,
    group: str,
    handle: Callable[[Record], Awaitable[None]],
    until: Callable[[], bool],
    *,
    strategy: Strategy | None = None,
    **options: Any,
) -> None:
    """Run the consumer runner on ``topic`` in ``group`` until ``until()`` holds (then
    stop it, which commits what was handled); raise what the runner raises."""
    consumer = bus.consumer(topic, group)
    await consumer.start()
    stop = asyncio.Event()
    try:
        async with bus.publisher() as publisher:
            runner = asyncio.create_task(
                run_consumer(
                    consumer,
                    handle,
                    DeadLetters(publisher, consumer_name="contract"),
                    stop=stop,
                    name="contract",
                    strategy=strategy or Sequential(),
                    **{**FAST, **options},
                )
            )
            async with asyncio.timeout(60):
                while not until() and not runner.done():
                    await asyncio.sleep(0.02)
                stop.set()
                await runner
    finally:
        await consumer.stop()


def value(i: int, key: str) -> dict[str, Any]:
    return {"seq": i, "customer_id": key}


@pytest.mark.parametrize("strategy", STRATEGIES, ids=str)
async def test_a_keys_records_arrive_in_order_on_the_keys_murmur2_partition(
    bus: Bus, strategy: Strategy
) -> None:
    topic = await bus.topic(Topic.EVENTS_USAGE)
    keys = [f"customer-{k}" for k in range(6)]
    records = [(topic, keys[i % 6], value(i, keys[i % 6]), [("kind", b"usage")]) for i in range(60)]
    async with bus.publisher() as publisher:
        assert await publisher.publish_each(records, timeout_s=10) == [None] * 60
    seen: list[Record] = []

    async def handle(record: Record) -> None:
        await asyncio.sleep(0.001 * (hash(record.key) % 3))  # keys finish out of step
        seen.append(record)

    await consume(bus, topic, "g", handle, lambda: len(seen) >= 60, strategy=strategy)
    assert len(seen) == 60
    for key in keys:
        mine = [r for r in seen if r.key == key]
        assert [orjson.loads(r.value)["seq"] for r in mine] == list(range(keys.index(key), 60, 6))
        assert {r.partition for r in mine} == {partition_for(key.encode(), bus.partitions)}
        assert all(dict(r.headers)["kind"] == b"usage" for r in mine)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=str)
async def test_a_new_member_of_the_group_resumes_at_the_committed_offset(
    bus: Bus, strategy: Strategy
) -> None:
    topic = await bus.topic(Topic.EVENTS_LOGIN)
    async with bus.publisher() as publisher:
        for i in range(10):
            await publisher.publish(topic, f"c{i % 4}", value(i, f"c{i % 4}"))
        first: list[int] = []

        async def handle_first(record: Record) -> None:
            first.append(orjson.loads(record.value)["seq"])

        await consume(bus, topic, "g", handle_first, lambda: len(first) >= 10, strategy=strategy)
        for i in range(10, 15):
            await publisher.publish(topic, f"c{i % 4}", value(i, f"c{i % 4}"))
    second: list[int] = []

    async def handle_second(record: Record) -> None:
        second.append(orjson.loads(record.value)["seq"])

    await consume(bus, topic, "g", handle_second, lambda: len(second) >= 5, strategy=strategy)
    assert sorted(first) == list(range(10))
    assert sorted(second) == list(range(10, 15))


@pytest.mark.parametrize("strategy", STRATEGIES, ids=str)
async def test_an_invalid_record_goes_to_the_dead_letter_topic_with_its_headers(
    bus: Bus, strategy: Strategy
) -> None:
    topic = await bus.topic(Topic.EVENTS_PAYMENT)
    async with bus.publisher() as publisher:
        await publisher.publish(topic, "c-1", b"{not json", [("kind", b"payment")])
        await publisher.publish(topic, "c-1", {"seq": "not a number"}, [("kind", b"payment")])
        await publisher.publish(topic, "c-1", value(2, "c-1"), [("kind", b"payment")])
    handled: list[int] = []

    async def handle(record: Record) -> None:
        seq = orjson.loads(record.value)["seq"]
        if not isinstance(seq, int):
            raise InvalidRecord(f"seq is not a number: {seq!r}")
        handled.append(seq)

    await consume(bus, topic, "g", handle, lambda: handled == [2], strategy=strategy)
    dead = await bus.read(dlq_name(topic), 2)
    assert [(r.key, r.value) for r in dead] == [
        ("c-1", b"{not json"),
        ("c-1", b'{"seq":"not a number"}'),
    ]
    partition = str(partition_for(b"c-1", bus.partitions)).encode()
    for offset, record in enumerate(dead):
        headers = dict(record.headers)
        assert headers["kind"] == b"payment"  # the original headers are kept
        assert (headers["dlq.topic"], headers["dlq.partition"]) == (topic.encode(), partition)
        assert headers["dlq.offset"] == str(offset).encode()
        assert headers["dlq.consumer"] == b"contract"
    assert dict(dead[0].headers)["dlq.error"].startswith(b"JSONDecodeError")
    assert (
        dict(dead[1].headers)["dlq.error"] == b"InvalidRecord: seq is not a number: 'not a number'"
    )
    async with bus.publisher() as publisher:
        await publisher.publish(topic, "c-1", value(3, "c-1"))
    later: list[int] = []

    async def note(record: Record) -> None:
        later.append(orjson.loads(record.value)["seq"])

    await consume(bus, topic, "g", note, lambda: 3 in later, strategy=strategy)
    assert later == [3]  # committed past the dead letters and the record handled


@pytest.mark.parametrize("strategy", STRATEGIES, ids=str)
async def test_records_are_consumed_again_after_a_failure_without_commit(
    bus: Bus, strategy: Strategy
) -> None:
    topic = await bus.topic(Topic.EVENTS_SUPPORT)
    async with bus.publisher() as publisher:
        for i in range(4):
            await publisher.publish(topic, "c-1", value(i, "c-1"))
    calls: list[int] = []

    async def failing(record: Record) -> None:
        seq = orjson.loads(record.value)["seq"]
        calls.append(seq)
        if seq == 2:
            raise RuntimeError("a bug in the handler")

    with pytest.raises(RuntimeError, match="a bug"):
        await consume(bus, topic, "g", failing, lambda: False, strategy=strategy, attempts=2)
    assert calls == [0, 1, 2, 2]  # two attempts, then the runner gave up
    handled: list[int] = []

    async def fixed(record: Record) -> None:
        handled.append(orjson.loads(record.value)["seq"])

    await consume(bus, topic, "g", fixed, lambda: 3 in handled, strategy=strategy)
    # Nothing of the failed batch was committed: it comes again whole (a batch before it
    # may have been committed, if the broker returned the records in two).
    assert handled == list(range(handled[0], 4)) and handled[0] <= 2


async def test_a_transactional_batch_is_read_whole_with_the_offsets_after_it(bus: Bus) -> None:
    topic = await bus.topic(Topic.NOTIFICATIONS)
    records: list[OutgoingRecord] = [
        (topic, f"c{i}", value(i, f"c{i}"), [("outbox_id", str(i).encode())]) for i in range(12)
    ]
    after = await bus.publish_batch(records)
    read = await bus.read(topic, 12)
    assert sorted(orjson.loads(r.value)["seq"] for r in read) == list(range(12))
    by_partition: dict[Partition, int] = {}
    for r in read:
        by_partition[r.where] = max(by_partition.get(r.where, 0), r.offset + 1)
    assert after == by_partition


async def test_a_group_done_with_a_transactional_batch_lags_by_nothing(bus: Bus) -> None:
    """On Kafka the batch's commit marker takes an offset after its records, and the
    runner commits the offset after the last record, the marker's: a member's lag must
    not count it (it read 1 per partition at rest), as the memory broker has no markers."""
    topic = await bus.topic(Topic.NOTIFICATIONS)
    records: list[OutgoingRecord] = [(topic, f"c{i}", value(i, f"c{i}"), []) for i in range(12)]
    after = await bus.publish_batch(records)
    handled: list[Record] = []

    async def handle(record: Record) -> None:
        handled.append(record)

    await consume(bus, topic, "g", handle, lambda: len(handled) >= 12)
    consumer = bus.consumer(topic, "g")  # a member of the group that is done
    await consumer.start()
    try:
        lags: dict[Partition, int] = {}
        async with asyncio.timeout(20):
            while not set(after) <= set(lags) or any(lags.values()):
                assert await consumer.poll(timeout_s=0.2, max_records=10) == []
                lags = await consumer.lag()
    except TimeoutError:
        raise AssertionError(f"lag {lags} on a group done with {after}") from None
    finally:
        await consumer.stop()
    assert len(handled) == 12
