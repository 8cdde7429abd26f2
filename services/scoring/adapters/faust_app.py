"""Every faust-specific line of the scoring worker (faust-streaming 0.15.3, pinned).

The app keeps each customer's state in a faust table (``customer-state``: the state's
JSON by customer id, RocksDB in production, with faust's own changelog topic for
recovery) and the plan cohorts' sums in another (``cohorts``, by plan). One agent per
input kind takes its stream's events in batches (``Stream.take_events``) and hands each
batch to :meth:`scoring.entrypoints.agents.Worker.handle`; faust acks the batch's events
when the worker returns, and commits offsets only after flushing the producer that the
states' changelog records and the worker's records went to (at-least-once).

What faust does not offer, worked around here and nowhere else; each workaround is
checked against the pinned version by ``tests/unit/scoring/test_faust_contract.py``:

1. **Table writes from a batch.** faust takes a table write's partition (and the
   RocksDB database it goes to) from the event being processed, which a stream
   iterator sets and ``take_events`` does not (faust-streaming issue #497: "Cannot
   modify table key from outside of stream iteration"). :func:`_processing` makes the
   customer's own event current around each table read and write.
2. **read_committed without exactly-once.** faust picks ``read_committed`` only with
   ``processing_guarantee="exactly_once"``, which would also make every output a Kafka
   transaction; :class:`_ReadCommittedThread` sets it on the consumer faust builds.
3. **A fresh cluster.** faust creates the changelog topics after its consumer subscribed,
   and a table write before the consumer's metadata shows them raises
   ``PartitionsMismatch``; the agents wait for that metadata before their first write.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import faust
import orjson
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as driver

from common.kafka import KeyPartitioner
from scoring.domain.state import CustomerState
from scoring.entrypoints.agents import Sweep, Worker
from scoring.ports import Incoming
from scoring.service import Emit, Kind, Topics
from scoring.settings import ScoringSettings

log = logging.getLogger(__name__)

READ_COMMITTED = "read_committed"
STATES_TABLE = "customer-state"
COHORTS_TABLE = "cohorts"


# -- the app ------------------------------------------------------------------------------


def make_app(settings: ScoringSettings) -> faust.App:
    """The faust app with the scorer's settings; nothing connects until the worker starts."""
    common = settings.common
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{common.kafka_bootstrap}",
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=common.topic_partitions,
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
    )
    if settings.read_committed:
        app.transport = _ReadCommittedTransport(app.conf.broker_consumer, app)
    return app


class _ReadCommittedThread(driver.AIOKafkaConsumerThread):
    # Workaround 2: faust builds its consumer with read_uncommitted unless exactly-once.
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if not hasattr(consumer, "_isolation_level"):  # pragma: no cover - guards an upgrade
            raise RuntimeError("this aiokafka version keeps its isolation level elsewhere")
        consumer._isolation_level = READ_COMMITTED  # read by aiokafka's start(), not before
        return consumer


class _ReadCommittedConsumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)


class _ReadCommittedTransport(driver.Transport):
    Consumer = _ReadCommittedConsumer


def isolation_level(app: faust.App) -> str | None:
    """The isolation level of ``app``'s running consumer (None before it runs)."""
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    return getattr(consumer, "_isolation_level", None)


# -- tables as the service's stores -----------------------------------------------------------


@contextmanager
def _processing(origin: Incoming) -> Iterator[None]:
    """Workaround 1: make ``origin`` faust's current event in this task, for a table
    read or write (``take_events`` hands over events without making them current)."""
    token = _current_event.set(weakref.ref(origin))
    try:
        yield
    finally:
        _current_event.reset(token)


class Tables:
    """The scorer's two tables, co-partitioned with the topics their agents read."""

    def __init__(self, app: faust.App, settings: ScoringSettings) -> None:
        partitions = settings.common.topic_partitions
        self.states = app.Table(
            STATES_TABLE,
            default=None,
            partitions=partitions,
            value_type=bytes,  # the state's JSON, encoded once by FaustStateStore
            options={"block_cache_size": settings.rocksdb_block_cache_mb * 1024 * 1024},
        )
        self.cohorts = app.Table(COHORTS_TABLE, default=None, partitions=partitions)


class FaustStateStore:
    """:class:`scoring.ports.StateStore` over the ``customer-state`` table."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, customer_id: str, origin: Incoming) -> CustomerState | None:
        with _processing(origin):
            raw = self._table.get(customer_id)
        return CustomerState.from_dict(orjson.loads(raw)) if raw else None

    def put(self, customer_id: str, state: CustomerState, origin: Incoming) -> None:
        value = orjson.dumps(state.to_dict())
        with _processing(origin):
            self._table[customer_id] = value

    def delete(self, customer_id: str, origin: Incoming) -> None:
        with _processing(origin):
            if customer_id in self._table:
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

    async def send(self, record: Emit) -> None:
        if self._undeclared:
            topic = self._undeclared.pop(record.topic, None)
            if topic is not None:
                await topic.maybe_declare()
        await self._app.producer.send(
            record.topic,
            record.key,
            record.value,
            partition=None,
            timestamp=None,
            headers=list(record.headers),
        )


def stats_topic(app: faust.App, topics: Topics) -> Any:
    """The compacted one-partition topic of each plan's pooled counts."""
    return app.topic(
        topics.cohort_stats, partitions=1, internal=True, compacting=True, deleting=False
    )


# -- agents, timer, task --------------------------------------------------------------------


def _wait_for_changelog(app: faust.App, table: Any) -> Callable[[], Any]:
    """Workaround 3: an awaitable check that returns once the consumer knows ``table``'s
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
            async for batch in stream.take_events(settings.batch_max_events, within):
                await states_ready()
                await worker.handle(kind, batch)

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
