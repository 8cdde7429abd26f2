"""What ``scoring.adapters.faust_app`` relies on in faust-streaming 0.15.3 (pinned).

Each test states one faust behaviour the adapter depends on or works around; if an
upgrade changes it, the test fails and names what to revisit. No broker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import faust
import pytest
from faust.streams import current_event
from faust.transport.drivers import aiokafka as driver

from scoring.adapters import faust_app
from scoring.settings import ScoringSettings


def test_the_pinned_version() -> None:
    assert version("faust-streaming") == "0.15.3"


@pytest.fixture
def app() -> Iterator[faust.App]:
    app = faust.App(f"contract-{uuid.uuid4().hex[:8]}", store="memory://", web_enabled=False)
    app.finalize()
    app.flow_control.resume()
    yield app


async def _drive(agent: Any, values: list[bytes]) -> list[Any]:
    """Put ``values`` to ``agent`` in its test context; wait until every one is acked."""
    async with agent.test_context() as running:
        sent = [await running.put(v, key=v, wait=False) for v in values]
        for _ in range(300):
            if all(e.message.acked for e in sent):
                return sent
            await asyncio.sleep(0.01)
    raise AssertionError("not every event was acked")


async def test_take_events_hands_over_events_that_are_not_current(app: faust.App) -> None:
    """faust-streaming issue #497: a table cannot be written from a ``take_events`` batch,
    because the batch's events are not faust's current event in the agent's task. The
    adapter makes them current itself (workaround 1); when this test fails, faust fixed
    it and ``_processing`` can go."""
    table = app.Table("t", default=None)
    seen: list[tuple[Any, str]] = []

    @app.agent(app.topic("in"))
    async def batches(stream: Any) -> None:
        async for batch in stream.take_events(10, 0.01):
            for event in batch:
                try:
                    table[event.key] = event.value
                except (TypeError, RuntimeError) as exc:
                    seen.append((current_event(), type(exc).__name__))

    await _drive(batches, [b"a", b"b"])
    assert seen == [(None, "TypeError"), (None, "TypeError")]


async def test_processing_makes_the_event_current_for_a_table_write(app: faust.App) -> None:
    """Workaround 1: with the event made current, the write takes the event's partition
    (the changelog's, and the RocksDB database's) and succeeds."""
    table = app.Table("t", default=None)
    partitions: list[tuple[int | None, int]] = []

    @app.agent(app.topic("in"))
    async def batches(stream: Any) -> None:
        async for batch in stream.take_events(10, 0.01):
            for event in batch:
                with faust_app._processing(event):
                    assert current_event() is event
                    partitions.append((table.partition_for_key(event.key), event.message.partition))
                    table[event.key] = event.value
            assert current_event() is None  # only around the write

    async with batches.test_context() as running:
        sent = [await running.put(b"v", key=b"k", partition=2, wait=False)]
        for _ in range(300):
            if all(e.message.acked for e in sent):
                break
            await asyncio.sleep(0.01)
    assert partitions == [(2, 2)]
    assert table[b"k"] == b"v"


async def test_take_events_acks_a_batch_only_once_the_agent_handled_it(app: faust.App) -> None:
    """At-least-once: faust commits an offset only for acked events, and ``take_events``
    acks a batch's events when the agent comes back for the next batch."""
    acked_while_handling: list[list[bool]] = []

    @app.agent(app.topic("in"))
    async def batches(stream: Any) -> None:
        async for batch in stream.take_events(3, 0.01):
            await asyncio.sleep(0.02)  # handling takes a while
            acked_while_handling.append([e.message.acked for e in batch])

    sent = await _drive(batches, [b"a", b"b", b"c"])
    assert acked_while_handling == [[False, False, False]]
    assert all(e.message.acked for e in sent)


def test_a_table_of_bytes_keeps_the_value_raw_and_the_key_as_json(app: faust.App) -> None:
    """The changelog's format (recovery and the integration tests read it): the state's
    JSON as the value, the customer id as a JSON string as the key."""
    table = app.Table("t", default=None, value_type=bytes)
    assert (table.key_serializer, table.value_serializer) == ("json", "raw")
    serializers = app.serializers
    assert serializers.dumps_key(None, "c-1", serializer=table.key_serializer) == b'"c-1"'
    value = serializers.dumps_value(bytes, b'{"a": 1}', serializer=table.value_serializer)
    assert value == b'{"a": 1}'


async def test_faust_reads_uncommitted_without_exactly_once_and_ours_reads_committed(
    unit_settings: ScoringSettings,
) -> None:
    """Workaround 2: faust-streaming has no setting for the isolation level alone."""
    plain = faust.App(f"contract-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:1")
    thread = plain.consumer._new_consumer_thread()
    assert type(thread) is driver.AIOKafkaConsumerThread
    assert thread._create_worker_consumer(plain.transport)._isolation_level == "read_uncommitted"

    ours = faust_app.make_app(unit_settings.model_copy(update={"read_committed": True}))
    thread = ours.consumer._new_consumer_thread()
    assert thread._create_worker_consumer(ours.transport)._isolation_level == "read_committed"


def test_a_consumer_that_is_not_running_knows_no_topic(app: faust.App) -> None:
    """Workaround 3 waits while the consumer reports 0 partitions for a changelog; with
    no consumer running (tests) faust answers None, and the agents do not wait."""
    assert app.consumer.topic_partitions("anything") is None
