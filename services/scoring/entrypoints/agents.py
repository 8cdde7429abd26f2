"""What the scorer's agents and timer do with what faust hands them (no faust here).

The faust adapter (:mod:`scoring.adapters.faust_app`) runs one agent per input kind and
calls :meth:`Worker.handle` with each batch it takes from the agent's stream; faust acks
the batch's events once this returns, so an offset is committed only for events whose
state and records were handed to the producer faust flushes before it commits.

Per event, in order: decode (an undecodable record goes to its topic's dead-letter
topic with the error, and the batch goes on) → read the state (the batch's own first)
→ the use case (:data:`scoring.service.ROUTES`) → hand its records to the sink. Per
batch, each customer's last state is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, MutableMapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from common import causation
from common.clock import Clock
from scoring import metrics
from scoring.domain.state import CustomerState
from scoring.domain.value import CohortStats
from scoring.errors import InvalidRecord
from scoring.ports import Incoming, RowStore, Sink, StateStore
from scoring.service import (
    ROUTES,
    Deps,
    Kind,
    Step,
    caused_by,
    dead_letter,
    decode_cohort_delta,
    needs_tick,
    on_cohort_delta,
    tick_for,
)

log = logging.getLogger(__name__)

CONSUMER = "scoring"

_OUTCOMES = {
    Kind.DELIVERIES: metrics.bound(metrics.DELIVERIES),
    Kind.TICKS: metrics.bound(metrics.TICKS),
    Kind.ERASURES: metrics.bound(metrics.ERASURES),
}
_EVENTS = metrics.bound(metrics.EVENTS)
_CHANGES = metrics.bound(metrics.SIGNAL_CHANGES)


def _count(kind: Kind, payload: Any, step: Step) -> None:
    if step.outcome is not None:
        for change in step.outcome.changes:
            _CHANGES(change.change, change.name).inc()
        if step.outcome.snapshot is not None:
            metrics.SNAPSHOTS.inc()
    if step.redemption is not None:
        metrics.REDEMPTIONS.labels(outcome=step.redemption).inc()
    if step.label is None:
        return
    if kind is Kind.EVENTS:
        _EVENTS(payload.kind, step.label).inc()
    else:
        _OUTCOMES[kind](step.label).inc()


def _count_invalid(kind: Kind) -> None:
    if kind is Kind.EVENTS:
        _EVENTS("unknown", "invalid").inc()
    else:
        _OUTCOMES[kind]("invalid").inc()


class Worker:
    """What the per-customer agents do with a batch, and the cohort agent with a delta.

    One batch at a time across the per-customer agents: a batch stores its states at its
    end, so two batches interleaved at an ``await`` could store a customer's states out
    of order (and publish its snapshots out of order).
    """

    def __init__(
        self,
        *,
        states: StateStore,
        cohort_rows: RowStore,
        sink: Sink,
        deps: Deps,
        cohorts: MutableMapping[str, CohortStats],
        clock: Clock,
    ) -> None:
        self._states = states
        self._rows = cohort_rows
        self._sink = sink
        self._deps = deps
        self._cohorts = cohorts  # what the rules read (``deps.cohorts`` is the same dict)
        self._clock = clock
        self._lock = asyncio.Lock()

    # -- per customer -----------------------------------------------------------------

    async def handle(self, kind: Kind, batch: Sequence[Incoming]) -> None:
        """Handle a batch of ``kind`` in order; store each customer's last state once."""
        route = ROUTES[kind]
        async with self._lock:
            pending: dict[str, tuple[Incoming, CustomerState]] = {}
            for item in batch:
                message = item.message
                try:
                    payload = route.decode(message.value or b"")
                except InvalidRecord as exc:
                    _count_invalid(kind)
                    await self._dead_letter(item, exc, self._deps.topics.source(kind))
                    continue
                customer_id = payload.customer_id
                held = pending.get(customer_id)
                state = held[1] if held is not None else self._states.get(customer_id, item)
                started = time.perf_counter()
                step = route.handle(payload, state, now=self._clock.now(), deps=self._deps)
                metrics.SCORE_SECONDS.observe(time.perf_counter() - started)
                ingested = causation.ingested_at(message.headers) if kind is Kind.EVENTS else None
                records = caused_by(step.records, ingested, self._deps.topics)
                if step.erase:
                    pending.pop(customer_id, None)
                    self._states.delete(customer_id, item)
                elif step.state is not None:
                    pending[customer_id] = (item, step.state)
                for record in records:
                    await self._sink.send(record)
                _count(kind, payload, step)
                if ingested is not None and step.outcome and step.outcome.snapshot is not None:
                    elapsed = causation.elapsed_s(self._clock, ingested)
                    metrics.INGEST_TO_SNAPSHOT_SECONDS.observe(elapsed)
            if pending:
                await self._states.write(pending)

    async def _dead_letter(self, item: Incoming, error: Exception, fallback: str) -> None:
        """Send ``item`` to its topic's dead-letter topic (``fallback``'s when its topic is
        not one the scorer reads, as in faust's test context)."""
        message = item.message
        topics = self._deps.topics
        known = {*topics.events, topics.deliveries, topics.ticks, topics.erasures, topics.cohorts}
        topic = message.topic if message.topic in known else fallback
        record = dead_letter(
            topic=topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=tuple(message.headers or ()),
            error=error,
            consumer=CONSUMER,
        )
        await self._sink.send(record)
        log.warning("record sent to dead-letter topic", extra={"topic": topic, "error": str(error)})

    # -- across customers -------------------------------------------------------------

    async def cohort(self, item: Incoming) -> None:
        """Add one plan-cohort delta to its plan's row; publish the plan's pooled counts
        when they change (and use them here at once: the other workers read the topic)."""
        try:
            delta = decode_cohort_delta(item.message.value or b"")
        except InvalidRecord as exc:
            metrics.COHORT_DELTAS.labels(outcome="invalid").inc()
            await self._dead_letter(item, exc, self._deps.topics.cohorts)
            return
        row = self._rows.get(delta.plan, item)
        step = on_cohort_delta(delta, row, now=self._clock.now(), deps=self._deps)
        self._rows.put(delta.plan, step.row, item)
        for record in step.records:
            await self._sink.send(record)
        if step.records:
            if step.stats is None:
                self._cohorts.pop(delta.plan, None)
            else:
                self._cohorts[delta.plan] = step.stats
            metrics.COHORT_UPDATES.inc()
        metrics.COHORT_DELTAS.labels(outcome="counted").inc()


class Sweep:
    """The clock sweep: finds local customers whose evaluation would change with time alone
    and sends each a tick (the ticks agent re-evaluates and stores them).

    Walks the worker's rows, at most ``batch`` per call, resuming where the last call
    stopped, and starts a new pass at most once per ``min_age`` of the clock.
    """

    def __init__(
        self,
        *,
        states: StateStore,
        sink: Sink,
        deps: Deps,
        clock: Clock,
        min_age: timedelta,
        batch: int,
    ) -> None:
        self._states = states
        self._sink = sink
        self._deps = deps
        self._clock = clock
        self._min_age = min_age
        self._batch = batch
        self._rows: Iterator[tuple[str, dict[str, Any]]] | None = None
        self._pass_began: datetime | None = None

    def due(self, now: datetime, limit: int) -> list[str]:
        """Up to ``limit`` local customers whose evaluation at ``now`` would change."""
        found: list[str] = []
        for _ in range(limit):
            if self._rows is None:
                if self._pass_began is not None and now - self._pass_began < self._min_age:
                    break  # rows are not due again before min_age has passed
                self._pass_began = now
                self._rows = self._states.scan()
            try:
                customer_id, data = next(self._rows)
            except (StopIteration, RuntimeError):  # the end, or the table changed under us
                self._rows = None
                break
            if not data or (data.get("evaluated_at") or "") > (now - self._min_age).isoformat():
                continue  # evaluated recently (an event or a tick): not due yet
            metrics.SWEPT.inc()
            if needs_tick(data, now=now, deps=self._deps):
                found.append(customer_id)
        return found

    async def __call__(self) -> None:
        """One sweep: a tick for each due customer found."""
        now = self._clock.now()
        for customer_id in self.due(now, self._batch):
            await self._sink.send(tick_for(customer_id, now, self._deps.topics))
