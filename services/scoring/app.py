"""The faust application: inputs → per-customer state (RocksDB table) → signals and scores.

Three agents share one table, all keyed by ``customer_id`` and co-partitioned:

- ``score_events`` folds product events (``events.*``);
- ``score_deliveries`` folds notifier outcomes (``deliveries``) into engagement;
- ``score_ticks`` re-evaluates a customer on the shared clock, for conditions that
  become true with time alone. A timer sweeps the worker's own customers (bounded per
  sweep) and sends a tick for each whose evaluation would change; the tick goes
  through a stream because faust writes a table (and its changelog) only from one.

A fourth, ``score_cohorts``, works across customers: the per-customer agents send the
plan-cohort deltas of what they scored (a customer counted at a month's start, lost,
upgraded) to the internal ``cohorts`` topic keyed by plan; it sums them in a table keyed
by plan and, when a plan's pooled counts change, publishes them on the compacted
one-partition ``cohort-stats`` topic. Every worker follows that topic from its start
(a consumer outside the group, ``follow_cohort_stats``) into the dict its rules read
for the CLV of its customers.

The three per-customer agents take their events in batches (``scoring.adapters.batches``:
the first event and those already waiting behind it). Per event, in order: decode →
pure rule (``scoring.domain.rules``) → publish the edge-triggered changes on
``signals`` and, when the score changed, a snapshot on ``scores``; per batch, each
customer's last state is written once to the table and its changelog; then the batch
is acked. A record that cannot be decoded or validated goes to its topic's dead-letter
topic with the error, and the agent goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import faust
import orjson
import rocksdict
from faust.types import EventT
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.clock import Clock, clock_from_settings
from common.events import CustomerId, UtcDatetime, parse_event
from common.kafka import KeyPartitioner, encode, follow, make_consumer
from common.messages import Delivery, Erasure
from common.topics import Topic, dlq_name, topic_name
from scoring import metrics
from scoring.adapters.batches import batches
from scoring.adapters.monitor import LeanMonitor
from scoring.adapters.transport import use_tenure_transport
from scoring.domain.cohorts import (
    CohortDelta,
    fold_delta,
    pooled,
    stats_from_dict,
    stats_to_dict,
)
from scoring.domain.model import ScoringModel
from scoring.domain.rules import Outcome, reevaluate, score, score_delivery
from scoring.domain.state import CustomerState
from scoring.domain.value import CohortStats
from scoring.settings import ScoringSettings

log = logging.getLogger(__name__)


class Tick(BaseModel):
    """Re-evaluate ``customer_id`` on the clock (internal ``ticks`` topic)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customer_id: CustomerId
    at: UtcDatetime


class CohortRecord(BaseModel):
    """One plan-cohort delta (internal ``cohorts`` topic, keyed by plan)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plan: str = Field(min_length=1, max_length=200)
    month: str = Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")
    customers: int = Field(ge=-1, le=1)
    lost: int = Field(ge=-1, le=1)
    mrr: float
    expansion: float = Field(ge=0)

    def delta(self) -> CohortDelta:
        return CohortDelta(**self.model_dump())


Headers = Sequence[tuple[str, bytes]]


class Sink(Protocol):
    """Where the scorer's records go (Kafka in production, a list in unit tests)."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> None:
        """Queue one record for ``topic`` (``value`` None: a tombstone); raises if the
        producer refuses it."""
        ...


class FaustSink:
    """Sends already-encoded records through the app's producer (acks=all).

    It calls the producer directly rather than ``Topic.send``: the records are bytes
    already, and faust's per-record topic machinery cost more than the rules
    (``make bench scoring_throughput``). The producer is the one faust flushes
    before it commits offsets, so at-least-once holds.
    """

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> None:
        await self._app.producer.send(
            topic, key, value, partition=None, timestamp=None, headers=list(headers or [])
        )


def load_state(raw: bytes | None, customer_id: str) -> CustomerState:
    """A table value (the state's JSON) as a state; a new one when there is none."""
    return CustomerState.from_dict(orjson.loads(raw)) if raw else CustomerState(customer_id)


def decode_stats(value: bytes | None) -> CohortStats | None:
    """A ``cohort-stats`` record's value: the pooled counts, or None (JSON null, tombstone)."""
    data = orjson.loads(value) if value else None
    return stats_from_dict(data) if data is not None else None


def create_app(
    settings: ScoringSettings,
    model: ScoringModel,
    clock: Clock | None = None,
    sink: Sink | None = None,
) -> faust.App:
    """Build the faust app; nothing connects until the worker starts."""
    common = settings.common
    clock = clock or clock_from_settings(common.time_scale, common.clock_epoch)
    prefix = common.topic_prefix
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{common.kafka_bootstrap}",
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=common.topic_partitions,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        producer_linger=settings.producer_linger_ms / 1000,
        producer_partitioner=KeyPartitioner(),  # murmur2 as everywhere, memoised per key
        consumer_auto_offset_reset="earliest",
        # faust creates the changelog and ticks topics at start-up; a short metadata age lets
        # the consumer see them (and rebalance onto them) in seconds, not 5 minutes
        consumer_metadata_max_age_ms=settings.metadata_max_age_ms,
        broker_session_timeout=settings.session_timeout_s,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        monitor=LeanMonitor(),  # faust's per-record statistics, which nothing here reads
    )
    use_tenure_transport(app, read_committed=settings.read_committed)
    event_topics = [topic_name(t, prefix) for t in Topic.events()]
    deliveries_name = topic_name(Topic.DELIVERIES, prefix)
    ticks_name = f"{prefix}{settings.ticks_topic}"
    source = app.topic(*event_topics)
    deliveries = app.topic(deliveries_name)
    erasures_name = topic_name(Topic.ERASURES, prefix)
    erasures = app.topic(erasures_name)
    ticks = app.topic(ticks_name, partitions=common.topic_partitions, internal=True)
    signals = topic_name(Topic.SIGNALS, prefix)
    scores = topic_name(Topic.SCORES, prefix)
    cohorts_name = f"{prefix}{settings.cohorts_topic}"
    cohort_deltas = app.topic(cohorts_name, partitions=common.topic_partitions, internal=True)
    sources = {*event_topics, deliveries_name, ticks_name, cohorts_name, erasures_name}
    out: Sink = sink or FaustSink(app)
    states = app.Table(
        "customer-state",
        default=None,
        partitions=common.topic_partitions,
        value_type=bytes,  # raw: the state's JSON, encoded by the agent (see apply)
        options={"block_cache_size": settings.rocksdb_block_cache_mb * 1024 * 1024},
    )

    cohort_rows = app.Table("cohorts", default=None, partitions=common.topic_partitions)
    # Every worker needs every plan's pooled counts: they are few and change rarely, so a
    # compacted one-partition topic that each worker reads whole (see docs/decisions.md).
    stats_name = f"{prefix}{settings.cohort_stats_topic}"
    stats_topic = app.topic(
        stats_name, partitions=1, internal=True, compacting=True, deleting=False
    )
    cohorts: dict[str, CohortStats] = {}  # what the rules read, by plan
    declared = [sink is not None]  # a test sink needs no topic

    async def declare_stats_topic() -> None:
        if not declared[0]:
            await stats_topic.maybe_declare()
            declared[0] = True

    async def dead_letter(message: Any, error: Exception, fallback_topic: str) -> None:
        reason = f"{type(error).__name__}: {error}"[:4000]
        topic = message.topic if message.topic in sources else fallback_topic
        headers = [
            *(message.headers or []),
            ("dlq.error", reason.encode()),
            ("dlq.topic", topic.encode()),
            ("dlq.offset", str(message.offset).encode()),
        ]
        await out.send(dlq_name(topic), message.key, message.value, headers)
        log.warning("record sent to dead-letter topic", extra={"topic": topic, "error": reason})

    changelogs_known: set[str] = set()
    ready_tables: set[int] = set()  # ids: a table compares by content, not identity

    async def wait_for_changelog(table: Any = states) -> None:
        """Block until the consumer knows the table's changelog topic.

        On a fresh cluster faust creates the changelog at start-up, after the consumer
        subscribed; until the consumer's metadata shows it, faust's first table write
        fails (``PartitionsMismatch``: "changelog has 0 partitions") and kills the agent.
        """
        if id(table) in ready_tables:
            return
        changelog_name = table.changelog_topic.get_topic_name()
        while changelog_name not in changelogs_known:
            if app.consumer.topic_partitions(changelog_name) != 0:  # None: not running (tests)
                changelogs_known.add(changelog_name)
                ready_tables.add(id(table))
                return
            log.info("waiting for the changelog topic's metadata", extra={"topic": changelog_name})
            await asyncio.sleep(0.5)

    # Decoded states of the customers scored lately, written through to the table: a hit
    # saves the RocksDB read, the JSON decode and ``from_dict`` (the table stays the
    # record; the rules never mutate a state they are given). Cleared at every rebalance,
    # since a partition that comes back may have been scored elsewhere meanwhile.
    cache: OrderedDict[str, CustomerState] = OrderedDict()

    def read_state(customer_id: str) -> CustomerState:
        state = cache.get(customer_id)
        if state is None:
            # the store itself: one RocksDB read (faust's Table.get reads twice, through
            # __contains__ then __getitem__, and calls its sensors between)
            return load_state(states.data.get(customer_id), customer_id)
        cache.move_to_end(customer_id)
        return state

    def remember(customer_id: str, state: CustomerState) -> None:
        cache[customer_id] = state
        cache.move_to_end(customer_id)
        if len(cache) > settings.state_cache_size:
            cache.popitem(last=False)

    async def forget_states(*_: Any, **__: Any) -> None:
        cache.clear()

    app.on_partitions_revoked.connect(forget_states)
    app.on_partitions_assigned.connect(forget_states)
    counted = metrics.bound(metrics.SIGNAL_CHANGES)
    # a test sink has no producer: there the table writes its changelog record itself
    direct_changelog = sink is None
    changelog_name = states.changelog_topic.get_topic_name()

    def changelog_written(future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # faust's flush before the commit raises it; no offset to record
        written = future.result()
        states.data.set_persisted_offset(written.topic_partition, written.offset)

    # The states a batch wrote, by customer: (the customer's last event of the batch, its
    # state, the state's JSON). Later events of the batch read their customer's state
    # here; the table and the changelog get each customer's last state once, at the end.
    Pending = dict[str, tuple[EventT, CustomerState, bytes]]

    async def write_states(pending: Pending, stream: faust.StreamT[bytes]) -> None:
        """Write a batch's states to the table's store and their changelog records.

        What ``states[key] = value`` does (faust's ``Table.on_key_set``) for each
        customer, without the changelog record's trip through faust's producer buffer
        task and topic machinery: the store puts land in the database of the partition
        of the customer's events, in one RocksDB write batch per partition; the records
        go straight to the producer, on the same changelog partition, and once the
        broker has a partition's last record of the batch its offset is kept as the
        store's persisted offset (what recovery resumes from).
        """
        if not pending:
            return
        if not direct_changelog:  # a test sink: faust's own path, no producer needed
            for customer_id, (event, _, value) in pending.items():
                stream._set_current_event(event)  # type: ignore[attr-defined]
                states[customer_id] = value
            return
        serializers = app.serializers
        store = states.data
        rows: dict[int, list[tuple[bytes, bytes]]] = {}
        for customer_id, (event, _, value) in pending.items():
            key = serializers.dumps_key(
                states.key_type, customer_id, serializer=states.key_serializer
            )
            encoded = serializers.dumps_value(
                states.value_type, value, serializer=states.value_serializer
            )
            rows.setdefault(event.message.partition, []).append((key, encoded))
        if hasattr(store, "_db_for_partition"):  # RocksDB: a write batch per partition
            for partition, items in rows.items():
                batch = rocksdict.WriteBatch(raw_mode=True)
                for key, encoded in items:
                    batch.put(key, encoded)
                    store._key_index[key] = partition
                store._db_for_partition(partition).write(batch)
        else:  # pragma: no cover - the memory store with a real producer
            for customer_id, (event, _, value) in pending.items():
                stream._set_current_event(event)  # type: ignore[attr-defined]
                store[customer_id] = value
        last: dict[int, asyncio.Future[Any]] = {}
        for partition, items in rows.items():
            for key, encoded in items:
                last[partition] = await app.producer.send(
                    changelog_name, key, encoded, partition=partition, timestamp=None, headers=None
                )
        for future in last.values():  # a partition's records are written in order
            future.add_done_callback(changelog_written)

    def current_state(pending: Pending, customer_id: str) -> CustomerState:
        row = pending.get(customer_id)
        return row[1] if row is not None else read_state(customer_id)

    async def apply(
        pending: Pending,
        event: EventT,
        customer_id: str,
        rule: Callable[[CustomerState], Outcome],
    ) -> Outcome:
        """Read the state, apply ``rule``, keep the state for the batch, publish what changed."""
        started = time.perf_counter()
        outcome = rule(current_state(pending, customer_id))
        metrics.SCORE_SECONDS.observe(time.perf_counter() - started)
        if outcome.duplicate:
            return outcome
        # encoded once here: with faust's json codec the store and the changelog record
        # each encoded it again
        value = orjson.dumps(outcome.state.to_dict())
        key = customer_id.encode()
        pending[customer_id] = (event, outcome.state, value)
        if settings.state_cache_size:
            remember(customer_id, outcome.state)
        for change in outcome.changes:
            counted(change.change, change.name).inc()
            await out.send(signals, key, encode(change))
        if outcome.snapshot is not None:
            metrics.SNAPSHOTS.inc()
            await out.send(scores, key, encode(outcome.snapshot))
        for delta in outcome.cohort:
            await out.send(cohorts_name, delta.plan.encode(), orjson.dumps(delta.to_dict()))
        return outcome

    # One batch at a time across the per-customer agents: a batch writes its states at
    # its end, so two interleaved at an await could write a customer's state out of order.
    batch_lock = asyncio.Lock()

    async def run_batches(
        stream: faust.StreamT[bytes],
        handle: Callable[[Pending, EventT], Awaitable[None]],
    ) -> None:
        """Take ``stream``'s events in batches; handle each event in order, then write the
        batch's states; only then are its events acked (``scoring.adapters.batches``)."""
        within = settings.batch_within_ms / 1000
        async for batch in batches(stream, settings.batch_max_events, within):
            async with batch_lock:
                await wait_for_changelog()
                pending: Pending = {}
                for event in batch:
                    stream._set_current_event(event)  # type: ignore[attr-defined]
                    await handle(pending, event)
                await write_states(pending, stream)

    events_counted = metrics.bound(metrics.EVENTS)

    async def score_one_event(pending: Pending, event: EventT) -> None:
        message = event.message
        try:
            parsed = parse_event(message.value)
        except (ValidationError, ValueError) as exc:
            metrics.EVENTS.labels(kind="unknown", outcome="invalid").inc()
            await dead_letter(message, exc, event_topics[0])
            return
        outcome = await apply(
            pending,
            event,
            parsed.customer_id,
            lambda s: score(s, parsed, model, now=clock.now(), cohorts=cohorts),
        )
        events_counted(parsed.kind, "duplicate" if outcome.duplicate else "scored").inc()
        if parsed.type == "reward_redeemed" and not outcome.duplicate:
            status = outcome.state.redemptions[-1]["status"]
            metrics.REDEMPTIONS.labels(outcome=status).inc()

    @app.agent(source)
    async def score_events(stream: faust.StreamT[bytes]) -> None:
        await run_batches(stream, score_one_event)

    async def score_one_delivery(pending: Pending, event: EventT) -> None:
        message = event.message
        try:
            delivery = Delivery.model_validate_json(message.value)
        except (ValidationError, ValueError) as exc:
            metrics.DELIVERIES.labels(outcome="invalid").inc()
            await dead_letter(message, exc, deliveries_name)
            return
        outcome = await apply(
            pending,
            event,
            delivery.customer_id,
            lambda s: score_delivery(s, delivery, model, now=clock.now(), cohorts=cohorts),
        )
        metrics.DELIVERIES.labels(outcome="duplicate" if outcome.duplicate else "scored").inc()

    @app.agent(deliveries)
    async def score_deliveries(stream: faust.StreamT[bytes]) -> None:
        await run_batches(stream, score_one_delivery)

    async def score_one_tick(pending: Pending, event: EventT) -> None:
        message = event.message
        try:
            tick = Tick.model_validate_json(message.value)
        except (ValidationError, ValueError) as exc:
            metrics.TICKS.labels(outcome="invalid").inc()
            await dead_letter(message, exc, ticks_name)
            return
        customer_id = tick.customer_id
        known = customer_id in pending or customer_id in cache
        if not known and states.data.get(customer_id) is None:
            return  # nothing known of this customer: a tick never creates state
        outcome = await apply(
            pending,
            event,
            customer_id,
            lambda s: reevaluate(s, model, max(tick.at, clock.now()), cohorts),
        )
        changed = bool(outcome.changes) or outcome.snapshot is not None
        metrics.TICKS.labels(outcome="changed" if changed else "unchanged").inc()

    @app.agent(ticks)
    async def score_ticks(stream: faust.StreamT[bytes]) -> None:
        await run_batches(stream, score_one_tick)

    async def erase_one(pending: Pending, event: EventT) -> None:
        """Forget an erased customer: its state goes (a tombstone on the table's changelog)
        and a tombstone on ``scores`` removes its snapshot there and tells the orchestrator
        that scoring's part of the erasure is done."""
        message = event.message
        try:
            erasure = Erasure.model_validate_json(message.value)
        except (ValidationError, ValueError) as exc:
            metrics.ERASURES.labels(outcome="invalid").inc()
            await dead_letter(message, exc, erasures_name)
            return
        customer_id = erasure.customer_id
        pending.pop(customer_id, None)
        cache.pop(customer_id, None)
        known = states.data.get(customer_id) is not None
        if known:
            del states[customer_id]
        await out.send(scores, customer_id.encode(), None)
        metrics.ERASURES.labels(outcome="erased" if known else "unknown").inc()

    @app.agent(erasures)
    async def erase_customers(stream: faust.StreamT[bytes]) -> None:
        await run_batches(stream, erase_one)

    @app.agent(cohort_deltas)
    async def score_cohorts(stream: faust.StreamT[bytes]) -> None:
        """Sum each plan's deltas; publish its pooled counts when they change."""
        async for event in stream.events():
            message = event.message
            try:
                delta = CohortRecord.model_validate_json(message.value).delta()
            except (ValidationError, ValueError) as exc:
                metrics.COHORT_DELTAS.labels(outcome="invalid").inc()
                await dead_letter(message, exc, cohorts_name)
                continue
            await wait_for_changelog(cohort_rows)
            row = cohort_rows.get(delta.plan) or {"months": {}, "published": None}
            aggregate = fold_delta(row["months"], delta, model.clv)
            stats = pooled(aggregate, clock.now(), model.clv)
            current = stats_to_dict(stats) if stats is not None else None
            cohort_rows[delta.plan] = {"months": aggregate, "published": current}
            if row["published"] != current:
                await declare_stats_topic()
                await out.send(stats_name, delta.plan.encode(), orjson.dumps(current))
                if stats is None:
                    cohorts.pop(delta.plan, None)
                else:
                    cohorts[delta.plan] = stats  # this worker at once; the others by the topic
                metrics.COHORT_UPDATES.inc()
            metrics.COHORT_DELTAS.labels(outcome="counted").inc()

    @app.task
    async def follow_cohort_stats() -> None:
        """Read ``cohort-stats`` from its start and keep following it (every worker)."""
        await declare_stats_topic()
        consumer = make_consumer(
            common, [stats_name], group_id=None, isolation_level="read_uncommitted"
        )
        await consumer.start()
        try:
            async for record in follow(consumer):
                plan = record.key or ""
                try:
                    stats = decode_stats(record.value)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("invalid cohort-stats record", extra={"error": str(exc)})
                    continue
                if stats is None:
                    cohorts.pop(plan, None)
                else:
                    cohorts[plan] = stats
        finally:
            await consumer.stop()

    cursor: list[Iterator[tuple[Any, Any]] | None] = [None]
    last_pass: list[datetime | None] = [None]  # when the current (or last) pass began

    def due(now: datetime, limit: int) -> list[str]:
        """Up to ``limit`` local customers whose evaluation at ``now`` would change.

        Walks the worker's own rows (active partitions), resuming where the last call
        stopped; a row evaluated less than ``sweep_min_age_s`` ago is skipped.
        """
        found: list[str] = []
        min_age = timedelta(seconds=settings.sweep_min_age_s)
        fresh = (now - min_age).isoformat()
        for _ in range(limit):
            if cursor[0] is None:
                if last_pass[0] is not None and now - last_pass[0] < min_age:
                    break  # a pass over every row at most once per min age: rows are not due
                last_pass[0] = now
                cursor[0] = iter(states.items())
            try:
                key, raw = next(cursor[0])
            except (StopIteration, RuntimeError):  # end of the table, or it changed under us
                cursor[0] = None
                break
            data = orjson.loads(raw) if raw else None
            if not data or (data.get("evaluated_at") or "") > fresh:
                continue  # evaluated recently (an event or a tick): not due yet
            metrics.SWEPT.inc()
            out = reevaluate(CustomerState.from_dict(data), model, now, cohorts)
            if out.changes or out.snapshot is not None or out.cohort:
                found.append(key if isinstance(key, str) else key.decode())
        return found

    @app.timer(interval=settings.sweep_interval_s)
    async def sweep() -> None:
        now = clock.now()
        for customer_id in due(now, settings.sweep_batch):
            tick = Tick(customer_id=customer_id, at=now)
            await out.send(ticks_name, customer_id.encode(), tick.model_dump_json().encode())

    app.tenure_states = states  # type: ignore[attr-defined]
    app.tenure_agents = {  # type: ignore[attr-defined]
        "events": score_events,
        "deliveries": score_deliveries,
        "ticks": score_ticks,
        "cohorts": score_cohorts,
        "erasures": erase_customers,
    }
    app.tenure_cohorts = cohort_rows  # type: ignore[attr-defined]
    app.tenure_cohort_stats = cohorts  # type: ignore[attr-defined]
    app.tenure_due = due  # type: ignore[attr-defined]
    return app
