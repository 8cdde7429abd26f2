"""The memory broker: what the contract suite cannot reach on the real broker cheaply
(transactions left open or aborted, rebalances), and its key mapping against Kafka's."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from common.kafka import CommitFailed, FakeConsumer, FakePublisher, MemoryBroker

TOPIC = "t.events.usage"


@given(key=st.text(min_size=1, max_size=40), partitions=st.integers(min_value=1, max_value=64))
def test_a_key_lands_where_kafkas_default_partitioner_puts_it(key: str, partitions: int) -> None:
    broker = MemoryBroker(partitions=partitions)
    every = list(range(partitions))
    record = broker.append(TOPIC, key, b"{}")
    assert record.partition == DefaultPartitioner()(key.encode(), every, every)


async def test_read_committed_waits_for_an_open_transaction_and_never_sees_an_aborted_one() -> None:
    broker = MemoryBroker(partitions=1)
    committed = FakeConsumer(broker, [TOPIC], group_id="c")
    uncommitted = FakeConsumer(broker, [TOPIC], group_id="u", read_committed=False)
    await committed.start()
    await uncommitted.start()
    aborted = broker.begin()
    broker.append(TOPIC, "k", b"aborted", transaction=aborted)
    open_ = broker.begin()
    broker.append(TOPIC, "k", b"open", transaction=open_)
    broker.append(TOPIC, "k", b"plain")  # after the open one: held back behind it
    broker.abort(aborted)

    def values(records: list) -> list[bytes]:
        return [r.value for r in records]

    assert values(await committed.poll(timeout_s=0.01, max_records=10)) == []
    assert values(await uncommitted.poll(timeout_s=0.01, max_records=10)) == [
        b"aborted",
        b"open",
        b"plain",
    ]
    broker.commit(open_)
    assert values(await committed.poll(timeout_s=0.01, max_records=10)) == [b"open", b"plain"]
    assert [r.value for r in broker.records(TOPIC)] == [b"open", b"plain"]


async def test_publish_batch_is_one_transaction_and_says_the_offsets_after_it() -> None:
    broker = MemoryBroker(partitions=2)
    publisher = FakePublisher(broker=broker)
    after = await publisher.publish_batch([(TOPIC, f"c{i}", {"i": i}, []) for i in range(10)])
    by_partition = {p: [r for r in broker.records(TOPIC) if r.partition == p] for p in (0, 1)}
    assert after == {(TOPIC, p): len(rs) for p, rs in by_partition.items() if rs}
    assert sum(after.values()) == 10


async def test_members_share_the_partitions_and_a_new_one_resumes_at_the_commit() -> None:
    broker = MemoryBroker(partitions=4)
    first = FakeConsumer(broker, [TOPIC], group_id="g")
    await first.start()
    assert first.assignment() == {(TOPIC, p) for p in range(4)}
    for i in range(20):
        broker.append(TOPIC, f"c{i}", b"%d" % i)
    records = await first.poll(timeout_s=0.01, max_records=100)
    assert len(records) == 20
    second = FakeConsumer(broker, [TOPIC], group_id="g")
    await second.start()
    assert first.assignment() | second.assignment() == {(TOPIC, p) for p in range(4)}
    assert not first.assignment() & second.assignment()
    lost = next(iter(second.assignment()))
    with pytest.raises(CommitFailed):
        await first.commit({lost: 1})
    kept = next(iter(first.assignment()))
    await first.commit({kept: 1})
    await first.stop()  # its partitions go to the second member, from the committed offset
    again = await second.poll(timeout_s=0.01, max_records=100)
    assert min(r.offset for r in again if r.where == kept) == 1
