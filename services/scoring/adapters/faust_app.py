"""The scoring worker's faust app (faust-streaming 0.15.3, pinned): with its consumer and
transport in :mod:`scoring.adapters.faust_consumer`, every faust-specific line.

The app keeps each customer's state in a faust table (``customer-state``: the state's
JSON by customer id, RocksDB, with faust's changelog topic for recovery) and the plan
cohorts' sums in another (``cohorts``, by plan). One agent per input kind takes its
stream's events in batches and hands each to
:meth:`scoring.entrypoints.agents.Worker.handle`; the batch's events are acked when the
worker returns, and faust commits offsets only after flushing the producer that the
changelog records and the worker's records went to (at-least-once).

faust's documented path (``Stream.take_events``, ``table[key] = value``) cost the worker
about 60 % more CPU per event than this (docs/decisions.md, issue 14), so the worker
goes around faust where the time went, here and nowhere else; each item is checked
against the pinned version by ``tests/unit/scoring/test_faust_contract.py``:

1. **Batches from the stream's queue** (:func:`batches`): the first event from faust's
   iterator, then those already waiting, without a turn of the event loop each.
2. **Delivery without four tasks per record** (:mod:`~scoring.adapters.faust_consumer`,
   like items 5 and 8): faust's fetcher wraps every record in ``wait_first``; a delivery
   that does not suspend skips it.
3. **A batch's states written at once** (:meth:`FaustStateStore.write`): one RocksDB
   write batch per partition, the changelog records straight to the producer, the
   persisted offset once per partition, instead of faust's per-key path.
4. **Table reads and writes outside a stream iteration**: faust takes their partition
   from the current event, which :func:`_processing` sets (faust-streaming issue #497).
5. **read_committed without exactly-once** (the consumer's thread): faust picks it only
   with ``processing_guarantee="exactly_once"`` (transactions on every output).
6. **A lean monitor** (:class:`_LeanMonitor`, faust's documented sensor hooks): no
   per-record statistics, which nothing here reads.
7. **A fresh cluster**: a table write before the consumer's metadata shows the
   changelog raises ``PartitionsMismatch``; the agents wait for that metadata. The
   internal topics the agents read (:func:`internal_topics`) are created before the
   worker starts: faust created them after its consumer subscribed, and the group
   rebalanced when they appeared.
8. **Nothing acknowledged that was not applied, across rebalances** (the consumer; and
   :func:`batches` leaves an event fetched before a rebalance unacknowledged).
9. **Commits past transaction markers in one step** (the consumer's gap between two
   delivered records ends before the later one).
10. **An empty set of active partitions is not "all of them"** (the consumer's thread):
   a restarted worker no longer loses its stream partitions' records to the fetch that
   ends table recovery.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from time import monotonic
from typing import Any, cast

import faust
import orjson
import rocksdict
from faust.sensors import Monitor
from faust.streams import _current_event
from faust.types import EventT

from common.kafka import KeyPartitioner
from scoring.adapters.faust_consumer import transport_for
from scoring.adapters.faust_security import broker_credentials
from scoring.domain.state import CustomerState
from scoring.entrypoints.agents import Sweep, Worker
from scoring.ports import Incoming, Sink
from scoring.service import Emit, Kind, Topics
from scoring.settings import ScoringSettings

log = logging.getLogger(__name__)

STATES_TABLE = "customer-state"
COHORTS_TABLE = "cohorts"


# -- the app ------------------------------------------------------------------------------


def make_app(settings: ScoringSettings) -> faust.App:
    """The faust app with the scorer's settings; nothing connects until the worker starts."""
    common = settings.common
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{common.kafka_bootstrap}",
        broker_credentials=broker_credentials(common),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=common.topic_partitions,
        # the changelogs and internal topics faust creates are as durable as Tenure's own
        topic_replication_factor=common.topic_replication_factor,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        producer_linger=settings.producer_linger_ms / 1000,
        producer_partitioner=KeyPartitioner(),  # murmur2, as every producer of the project
        consumer_auto_offset_reset="earliest",
        # a short metadata age lets the consumer see the topics faust creates at start-up
        # (changelogs, ticks) in seconds rather than 5 minutes (see _wait_for_changelog)
        consumer_metadata_max_age_ms=settings.metadata_max_age_ms,
        broker_session_timeout=settings.session_timeout_s,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        monitor=_LeanMonitor(),
    )
    app.transport = transport_for(app, read_committed=settings.read_committed)
    return app


class _LeanMonitor(Monitor):
    """Item 6: faust's monitor keeps per-record statistics for its web views and statsd
    sensors, none of which the scorer uses; kept: the inbound time faust's stalled-stream
    check reads."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        return None


# -- batches --------------------------------------------------------------------------------


async def batches(
    stream: faust.StreamT[Any], max_events: int, within_s: float = 0.0
) -> AsyncIterator[list[EventT[Any]]]:
    """Item 1: lists of up to ``max_events`` events of ``stream``: the first from faust's
    iterator, then those already in the stream's queue, each given what the iterator
    gives an event before yielding it (one of an acking topic is tracked). One fetched
    before a rebalance is left out and not acked: its partition is fetched again from
    the committed offset, which must not pass it (item 8). With ``within_s`` and nothing
    waiting, wait that long once. The queued events are acked after the caller handled
    the batch (the first by faust's iterator); if handling raises, they are not."""
    app = stream.app
    queue = stream.channel.queue  # type: ignore[attr-defined]  # faust has no "what is queued"
    consumer = app.consumer
    acking_topics = app.topics.acking_topics
    flow_control = app.flow_control
    async for first in stream.events():
        batch = [first]
        if within_s > 0 and max_events > 1 and queue.empty():
            await asyncio.sleep(within_s)
        while len(batch) < max_events and not queue.empty():
            event = queue.get_nowait()
            message = event.message
            if not flow_control.is_active() or message.generation_id != app.consumer_generation_id:
                continue  # fetched before a rebalance: not applied, so not acked (item 8)
            if message.topic in acking_topics and not message.tracked:
                message.tracked = True
                consumer.track_message(message)
            batch.append(event)
        yield batch
        for event in batch[1:]:
            await stream.ack(event)


# -- tables as the service's stores -----------------------------------------------------------


@contextmanager
def _processing(origin: Incoming) -> Iterator[None]:
    """Item 4: make ``origin`` faust's current event in this task, around a table read or
    write (faust reads its partition from there)."""
    token = _current_event.set(weakref.ref(cast(EventT[Any], origin)))  # a faust event
    try:
        yield
    finally:
        _current_event.reset(token)


class Tables:
    """The scorer's two tables, co-partitioned with the topics their agents read."""

    def __init__(self, app: faust.App, settings: ScoringSettings) -> None:
        partitions = settings.common.topic_partitions
        insync = {"min.insync.replicas": str(settings.common.topic_min_insync_replicas)}  # as ours
        self.states = app.Table(
            STATES_TABLE,
            default=None,
            partitions=partitions,
            value_type=bytes,  # the state's JSON, encoded once by FaustStateStore
            options={"block_cache_size": settings.rocksdb_block_cache_mb * 1024 * 1024},
            extra_topic_configs=insync,
        )
        self.cohorts = app.Table(COHORTS_TABLE, partitions=partitions, extra_topic_configs=insync)


class FaustStateStore:
    """:class:`scoring.ports.StateStore` over the ``customer-state`` table (RocksDB).

    :meth:`write` does what ``table[key] = value`` does for each customer (faust's
    ``Table.on_key_set``) in bulk (item 3): the values go to the database of the
    partition of the customer's event, one RocksDB write batch per partition; the
    changelog records, encoded by the table's serializers, go to ``sink`` on the same
    partition of the changelog; when the broker has a partition's last record, its offset
    becomes the store's persisted offset (where recovery resumes).
    """

    def __init__(self, table: Any, sink: Sink) -> None:
        self._table = table
        self._sink = sink
        self._changelog = table.changelog_topic.get_topic_name()

    def get(self, customer_id: str, origin: Incoming) -> CustomerState | None:
        with _processing(origin):
            raw = self._table.data.get(customer_id)  # one read (Table.get reads twice)
        return CustomerState.from_dict(orjson.loads(raw)) if raw else None

    async def write(self, states: Mapping[str, tuple[Incoming, CustomerState]]) -> None:
        table, store = self._table, self._table.data
        serializers = table.app.serializers
        rows: dict[int, list[tuple[bytes, bytes]]] = {}
        for customer_id, (origin, state) in states.items():
            key = serializers.dumps_key(
                table.key_type, customer_id, serializer=table.key_serializer
            )
            value = serializers.dumps_value(
                table.value_type, orjson.dumps(state.to_dict()), serializer=table.value_serializer
            )
            rows.setdefault(origin.message.partition, []).append((key, value))
        for partition, items in rows.items():
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value in items:
                batch.put(key, value)
                store._key_index[key] = partition  # as faust's own put: later reads find it
            # item 3: faust's store has no bulk write; this is its per-partition database
            store._db_for_partition(partition).write(batch)
        last: dict[int, asyncio.Future[Any]] = {}
        for partition, items in rows.items():
            for key, value in items:
                sent = await self._sink.send(Emit(self._changelog, key, value, partition=partition))
                if sent is not None:
                    last[partition] = sent
        for future in last.values():  # a partition's records are written in order
            future.add_done_callback(self._persisted)

    def _persisted(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # faust's flush before the commit raises it; no offset to record
        written = future.result()
        self._table.data.set_persisted_offset(written.topic_partition, written.offset)

    def delete(self, customer_id: str, origin: Incoming) -> None:
        with _processing(origin):
            if self._table.data.get(customer_id) is not None:
                del self._table[customer_id]

    def scan(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, raw in self._table.items():
            yield key, orjson.loads(raw) if raw else {}


class FaustRowStore:
    """:class:`scoring.ports.RowStore` over a table of JSON values (the plan cohorts)."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: str, origin: Incoming) -> dict[str, Any] | None:
        with _processing(origin):
            row = self._table.get(key)
        return dict(row) if row else None

    def put(self, key: str, row: dict[str, Any], origin: Incoming) -> None:
        with _processing(origin):
            self._table[key] = row


# -- records out ----------------------------------------------------------------------------


class FaustSink:
    """:class:`scoring.ports.Sink` through the app's producer (acks=all), the one faust
    flushes before it commits offsets. A topic of ``declare`` is created before its
    first record (the compacted ``cohort-stats``, which no agent reads)."""

    def __init__(self, app: faust.App, declare: Mapping[str, Any] = {}) -> None:
        self._app = app
        self._undeclared = dict(declare)

    async def send(self, record: Emit) -> asyncio.Future[Any]:
        if self._undeclared:
            topic = self._undeclared.pop(record.topic, None)
            if topic is not None:
                await topic.maybe_declare()
        return await self._app.producer.send(  # type: ignore[return-value]
            record.topic,
            record.key,
            record.value,
            partition=record.partition,
            timestamp=None,
            headers=list(record.headers),
        )


def stats_topic(app: faust.App, topics: Topics) -> Any:
    """The compacted one-partition topic of each plan's pooled counts."""
    return app.topic(
        topics.cohort_stats, partitions=1, internal=True, compacting=True, deleting=False
    )


# -- agents, timer, task --------------------------------------------------------------------


def internal_topics(topics: Topics) -> tuple[str, ...]:
    """Item 7: the internal topics the agents read (clock ticks, cohort deltas), to be
    created with the settings' partition count before the worker subscribes."""
    return (topics.ticks, topics.cohorts)


def _wait_for_changelog(app: faust.App, table: Any) -> Callable[[], Any]:
    """Item 7: an awaitable check that returns once the consumer knows ``table``'s
    changelog topic (at once after the first success, and in tests, with no consumer)."""
    name = table.changelog_topic.get_topic_name()
    known = [False]

    async def ready() -> None:
        while not known[0]:
            if app.consumer.topic_partitions(name) != 0:  # None: no consumer running (tests)
                known[0] = True
                return
            log.info("waiting for the changelog topic's metadata", extra={"topic": name})
            await asyncio.sleep(0.5)

    return ready


def register(
    app: faust.App,
    *,
    settings: ScoringSettings,
    topics: Topics,
    tables: Tables,
    worker: Worker,
    sweep: Sweep,
    follow_cohort_stats: Callable[[], Any] | None,
) -> dict[str, Any]:
    """Define the agents, the sweep timer and (``follow_cohort_stats``) the follower task.
    Returns the agents by name (``events``, ``deliveries``, ``ticks``, ``erasures``,
    ``cohorts``), for ``agent.test_context()``."""
    partitions = settings.common.topic_partitions
    sources = {
        Kind.EVENTS: app.topic(*topics.events),
        Kind.DELIVERIES: app.topic(topics.deliveries),
        Kind.TICKS: app.topic(topics.ticks, partitions=partitions, internal=True),
        Kind.ERASURES: app.topic(topics.erasures),
    }
    states_ready = _wait_for_changelog(app, tables.states)
    cohorts_ready = _wait_for_changelog(app, tables.cohorts)
    within = settings.batch_within_ms / 1000
    agents: dict[str, Any] = {}

    def per_customer(kind: Kind) -> Any:
        async def agent(stream: faust.StreamT[bytes]) -> None:
            async for batch in batches(stream, settings.batch_max_events, within):
                await states_ready()
                await worker.handle(kind, cast(list[Incoming], batch))

        agent.__name__ = agent.__qualname__ = f"score_{kind.value}"
        return app.agent(sources[kind], name=f"scoring.{kind.value}")(agent)

    for kind in Kind:
        agents[kind.value] = per_customer(kind)

    cohort_deltas = app.topic(topics.cohorts, partitions=partitions, internal=True)

    @app.agent(cohort_deltas, name="scoring.cohorts")
    async def score_cohorts(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await cohorts_ready()
            await worker.cohort(event)

    agents["cohorts"] = score_cohorts

    @app.timer(interval=settings.sweep_interval_s)
    async def sweep_local_customers() -> None:
        await sweep()

    if follow_cohort_stats is not None:
        app.task(follow_cohort_stats)
    return agents


def run(app: faust.App, loglevel: str) -> None:
    """Run the faust worker until it is stopped (blocks; exits the process)."""
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
    worker.execute_from_commandline()
