"""What ``scoring.adapters.faust_app`` and ``faust_consumer`` rely on in faust-streaming
0.15.3 (pinned).

Each test states one faust behaviour the adapter depends on or works around (the items
of its module docstring); if an upgrade changes it, the test fails and names what to
revisit. No broker.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.sensors import Monitor
from faust.streams import current_event
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from scoring.adapters import faust_app, faust_consumer
from scoring.adapters.memory import ListSink
from scoring.domain.state import CustomerState
from scoring.settings import ScoringSettings


def test_the_pinned_version() -> None:
    assert version("faust-streaming") == "0.15.3"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[faust.App]:
    app = faust.App(
        f"contract-{uuid.uuid4().hex[:8]}",
        store="rocksdb://",
        datadir=str(tmp_path),
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.finalize()
    app.flow_control.resume()
    yield app


async def _acked(sent: list[Any]) -> None:
    for _ in range(300):
        if all(e.message.acked for e in sent):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not every event was acked")


# -- item 1: batches from the stream's queue --------------------------------------------------


async def test_batches_take_what_waits_in_the_queue_and_ack_it_once_handled(
    app: faust.App,
) -> None:
    """``batches`` reads the stream's channel queue (``stream.channel.queue``) and acks
    with ``Stream.ack``; faust's iterator acks the first event, the stream's current one."""
    handled: list[tuple[int, list[bool]]] = []

    @app.agent(app.topic("in"))
    async def agent(stream: Any) -> None:
        async for batch in faust_app.batches(stream, 10, within_s=0.3):
            await asyncio.sleep(0.02)  # handling takes a while
            handled.append((len(batch), [e.message.acked for e in batch]))

    async with agent.test_context() as running:
        sent = [await running.put(v, key=v, wait=False) for v in (b"a", b"b", b"c")]
        await _acked(sent)
    assert handled == [(3, [False, False, False])]  # one batch, acked after it was handled


# -- item 2: delivery without four tasks per record --------------------------------------------


def test_the_fetcher_races_each_delivery_with_the_flow_in_wait_first() -> None:
    """The eager ``wait_first`` takes its fast path only for the fetcher's call form; if
    faust changes it, every call falls back to faust's own (correct, but slower)."""
    source = " ".join(inspect.getsource(Consumer._drain_messages).split())
    assert "await self.wait_first( callback(message), self.suspend_flow.wait() )" in source
    assert issubclass(faust_consumer._Consumer, driver.Consumer)


async def test_a_delivery_that_does_not_suspend_finishes_in_the_eager_step() -> None:
    async def deliver() -> str:
        return "delivered"

    assert faust_consumer.start_eagerly(deliver()) == (True, "delivered")


async def test_a_suspended_delivery_resumes_and_can_be_cancelled_inside() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def deliver() -> int:
        steps.append("before")
        try:
            return await gate + 1
        finally:
            steps.append("after")

    done, rest = faust_consumer.start_eagerly(deliver())
    assert not done and steps == ["before"]
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    gate.set_result(41)
    assert await task == 42 and steps == ["before", "after"]

    other: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    gate = other
    done, rest = faust_consumer.start_eagerly(deliver())
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert other.cancelled() and steps[-1] == "after"


# -- items 3 and 4: a batch's states, written as faust writes a table -------------------------


class _Origin:
    def __init__(self, partition: int) -> None:
        self.message = faust.types.Message(
            topic="in", partition=partition, offset=0, timestamp=0.0, timestamp_type=0,
            headers=None, key=None, value=None, checksum=None,
        )  # fmt: skip


async def test_written_states_are_what_faust_reads_and_what_its_recovery_replays(
    app: faust.App,
) -> None:
    """The RocksDB store's ``_db_for_partition`` and ``_key_index``; the value bytes in
    the store are the changelog record's (faust's recovery puts ``message.value`` as is);
    ``set_persisted_offset`` is where recovery resumes."""
    table = app.Table("states", default=None, value_type=bytes, partitions=3)
    sink = ListSink()
    store = faust_app.FaustStateStore(table, sink)
    state = CustomerState("c-1", events_counted=3)
    await store.write({"c-1": (_Origin(2), state)})
    [record] = sink.records
    assert record.topic == table.changelog_topic.get_topic_name() and record.partition == 2
    assert record.key == b'"c-1"'  # faust's json key serializer
    assert table.data._db_for_partition(2).get(record.key) == record.value
    assert table.data.get("c-1") == record.value  # found without a current event
    assert store.get("c-1", _Origin(2)) == state
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    class Written:
        topic_partition = TP(record.topic, 2)
        offset = 41

    future.set_result(Written())
    store._persisted(future)
    assert table.data.persisted_offset(TP(record.topic, 2)) == 41


async def test_a_table_is_written_outside_a_stream_only_with_the_event_made_current(
    app: faust.App,
) -> None:
    """faust-streaming issue #497: faust takes a write's partition from the current event
    (``faust.streams._current_event``); outside a stream iteration there is none."""
    table = app.Table("t", default=None, value_type=bytes, partitions=3)
    with pytest.raises(TypeError, match="outside of stream iteration"):
        table["k"] = b"v"
    origin = _Origin(1)
    with faust_app._processing(origin):
        assert current_event() is origin
        assert table.partition_for_key("k") == 1
    assert current_event() is None


def test_a_table_of_bytes_keeps_the_value_raw_and_the_key_as_json(app: faust.App) -> None:
    table = app.Table("t", default=None, value_type=bytes)
    assert (table.key_serializer, table.value_serializer) == ("json", "raw")


# -- item 5: read_committed -------------------------------------------------------------------


async def test_faust_reads_uncommitted_without_exactly_once_and_ours_reads_committed(
    unit_settings: ScoringSettings,
) -> None:
    plain = faust.App(f"contract-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:1")
    thread = plain.consumer._new_consumer_thread()
    assert type(thread) is driver.AIOKafkaConsumerThread
    assert thread._create_worker_consumer(plain.transport)._isolation_level == "read_uncommitted"

    ours = faust_app.make_app(unit_settings.model_copy(update={"read_committed": True}))
    thread = ours.consumer._new_consumer_thread()
    assert thread._create_worker_consumer(ours.transport)._isolation_level == "read_committed"


# -- item 6: the lean monitor ------------------------------------------------------------------


def test_the_lean_monitor_overrides_faust_sensor_hooks_with_their_signatures() -> None:
    for name, method in vars(faust_app._LeanMonitor).items():
        if name.startswith("on_"):
            ours = list(inspect.signature(method).parameters)
            assert ours == list(inspect.signature(getattr(Monitor, name)).parameters), name
    monitor = faust_app._LeanMonitor()
    tp = TP("t", 1)
    monitor.on_stream_event_in(tp, 7, stream=object(), event=object())
    assert tp in monitor.stream_inbound_time  # faust's stalled-stream check reads it
    assert monitor.events_total == 0


# -- item 7: a fresh cluster -------------------------------------------------------------------


def test_a_consumer_that_is_not_running_knows_no_topic(app: faust.App) -> None:
    """The agents wait while the consumer reports 0 partitions for a changelog; with no
    consumer running (tests) faust answers None, and they do not wait."""
    assert app.consumer.topic_partitions("anything") is None


# -- item 8: nothing acknowledged that was not applied, across rebalances ------------------


def _order_in(function: Any, *calls: str) -> list[int]:
    source = " ".join(inspect.getsource(function).split())
    return [source.index(call) for call in calls]


def test_faust_resumes_stream_partitions_before_its_seek_and_clear() -> None:
    """Why stream partitions are held until ``resume_flow``: faust resumes them, seeks
    to the committed offsets, then clears the streams' queues (``flow_control.resume``)
    and resumes the flow; what was fetched in between was cleared unapplied."""
    for function in (Recovery.on_recovery_completed, Recovery._resume_streams):
        calls = (
            "consumer.resume_partitions(",
            "consumer.perform_seek()",
            "flow_control.resume()",
            "consumer.resume_flow()",
        )
        positions = _order_in(function, *calls)
        assert positions == sorted(positions), function.__qualname__
    # faust resumes stream partitions there only; elsewhere changelog partitions
    source = " ".join(inspect.getsource(Recovery).split())
    changelogs = ("(active_tps)", "(tps_resuming)", "(standby_tps)")
    assert all(f"T(consumer.resume_partitions){tps}" in source for tps in changelogs)
    assert source.count("resume_partitions") == 2 + len(changelogs)


def test_our_consumer_holds_resumed_stream_partitions_until_the_flow_resumes(
    unit_settings: ScoringSettings,
) -> None:
    app = faust_app.make_app(unit_settings)
    changelog = app.Table("t", partitions=2).changelog_topic.get_topic_name()
    consumer = app.consumer
    assert isinstance(consumer, faust_consumer._Consumer)
    stream, table = TP("events", 0), TP(changelog, 0)
    consumer.assignment = lambda: {stream, table}  # type: ignore[method-assign]
    consumer.pause_partitions({stream, table})
    consumer.resume_partitions({stream, table})
    assert consumer._get_active_partitions() == {table}  # faust's set the fetcher reads
    consumer.resume_flow()
    assert consumer._get_active_partitions() == {stream, table}
    consumer.resume_partitions({stream})
    consumer.pause_partitions({stream})  # a rebalance before the flow resumed
    consumer.resume_flow()
    assert stream not in consumer._get_active_partitions()


def test_faust_acks_the_events_its_stream_skips_after_a_rebalance() -> None:
    """Why acks are filtered: faust's iterator acks an event it skips (fetched before a
    rebalance), before tracking it."""
    source = " ".join(inspect.getsource(faust.Stream._py_aiter).split())
    assert "if event is not None and (do_ack or value is skipped_value):" in source
    assert source.index("value = skipped_value") < source.index("message.tracked = True")


def _message(offset: int, *, generation: int, tracked: bool) -> ConsumerMessage:
    message = ConsumerMessage(
        "in", 0, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation
    )
    message.tracked = tracked
    return message


def test_only_an_event_a_stream_took_in_this_generation_becomes_committable(
    unit_settings: ScoringSettings,
) -> None:
    app = faust_app.make_app(unit_settings)
    app.topics._acking_topics.add("in")  # as for a topic an agent reads
    app.consumer_generation_id = 3
    consumer = app.consumer
    taken = _message(0, generation=3, tracked=True)
    skipped = _message(1, generation=3, tracked=False)
    earlier = _message(2, generation=2, tracked=True)
    consumer._unacked_messages.update({taken, earlier})
    assert [consumer.ack(m) for m in (taken, skipped, earlier)] == [True, False, False]
    assert consumer._acked[TP("in", 0)] == [0]  # what faust's commit reads
    assert not consumer._unacked_messages  # nothing left for a rebalance to wait for
    assert all(m.acked for m in (taken, skipped, earlier))


# -- item 9: commits past transaction markers in one step ----------------------------------------


def test_faust_counts_the_delivered_record_in_the_gap_before_it() -> None:
    """The fetcher registers the offsets between the last record read and the one it
    delivers as a gap, up to and including the delivered one (``addi(from, to + 1)``)."""
    source = " ".join(inspect.getsource(Consumer._drain_messages).split())
    assert "await self._add_gap(tp, r_offset + 1, offset)" in source
    assert "gap_for_tp.addi(offset_from, offset_to + 1)" in " ".join(
        inspect.getsource(Consumer._add_gap).split()
    )


async def test_one_commit_passes_every_transaction_acked_since_the_last(
    unit_settings: ScoringSettings,
) -> None:
    """Three transactions of five records, each followed by its commit marker (offsets
    5, 11, 17), all acked: the next commit goes to 17, not to the first marker only."""
    app = faust_app.make_app(unit_settings)
    consumer = app.consumer
    assert isinstance(consumer, faust_consumer._Consumer)
    tp = TP("events", 0)
    records = [o for o in range(17) if o not in (5, 11)]
    for marker in (5, 11):  # as the fetcher does when it delivers the record after one
        await consumer._add_gap(tp, marker, marker + 1)
    consumer._acked[tp] = list(records)
    assert consumer._new_offset(tp) == 17


# -- item 10: an empty set of active partitions is not "all of them" ---------------------------


def test_aiokafka_reads_an_empty_set_of_partitions_as_every_assigned_one() -> None:
    # What item 10 works around, in the pinned aiokafka: a partition not in a *non-empty*
    # set is skipped; with an empty one, every fetched partition is drained.
    from aiokafka.consumer.fetcher import Fetcher

    assert "if partitions and tp not in partitions:" in inspect.getsource(Fetcher.fetched_records)


async def test_our_threads_hand_aiokafka_a_view_that_is_never_empty_to_it(
    unit_settings: ScoringSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    given: list[Any] = []

    async def fetch(self: Any, consumer: Any, active: Any, **kwargs: Any) -> dict[Any, Any]:
        given.append(active)
        return {}

    monkeypatch.setattr(driver.AIOKafkaConsumerThread, "_fetch_records", fetch)
    live: set[TP] = {TP("t", 0)}
    for read_committed in (True, False):
        app = faust_app.make_app(
            unit_settings.model_copy(update={"read_committed": read_committed})
        )
        thread = app.consumer._new_consumer_thread()
        await thread._fetch_records(None, live, timeout=0)
        await thread._fetch_records(None, None, timeout=0)  # a client-only app: all
    view = given[0]
    assert isinstance(view, faust_consumer.NeverAll) and TP("t", 0) in view
    live.clear()  # the changelogs paused at the end of recovery, the streams still held
    assert view and TP("t", 0) not in view and list(view) == []
    assert given[1] is None and isinstance(given[2], faust_consumer.NeverAll) and given[3] is None
