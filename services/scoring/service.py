"""The scorer's use cases: what one input does to a customer, and the records it emits.

Each input kind has a decoder and a handler, routed by :data:`ROUTES`. A handler takes
the decoded input, the customer's stored state (None: nothing stored) and its
dependencies, and returns a :class:`Step`: the state to store (or to erase) and the
records to publish. Nothing here reads a clock, a table or a topic: the worker
(:mod:`scoring.entrypoints.agents`) reads the state, passes ``now`` and does the I/O.

- an **event** (``events.*``) is folded by :func:`scoring.domain.rules.score`;
- a **delivery** (the notifier's outcome of a message) by ``score_delivery``;
- a **tick** (internal, from the clock sweep) re-evaluates a known customer at ``now``;
  a tick never creates a state;
- an **erasure** deletes the customer's state and publishes a tombstone on ``scores``.

Output is edge-triggered: a signal change only when a signal turns on or off (or the
tier, band, segment or loyalty tier moves), a snapshot only when the score changed,
plan-cohort deltas only when the customer's cohort counts change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common import causation
from common.events import CustomerId, Event, UtcDatetime, parse_event
from common.kafka import dead_letter_headers, encode
from common.messages import Delivery, Erasure
from common.topics import Topic, dlq_name, topic_name
from scoring.domain.cohorts import CohortDelta, fold_delta, pooled, stats_from_dict, stats_to_dict
from scoring.domain.model import ScoringModel
from scoring.domain.rules import Outcome, reevaluate, score, score_delivery
from scoring.domain.state import CustomerState
from scoring.domain.value import CohortStats
from scoring.errors import InvalidRecord
from scoring.settings import ScoringSettings

Headers = tuple[tuple[str, bytes], ...]


class Kind(StrEnum):
    """The per-customer inputs, one agent each."""

    EVENTS = "events"
    DELIVERIES = "deliveries"
    TICKS = "ticks"
    ERASURES = "erasures"


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


@dataclass(frozen=True)
class Emit:
    """One record to publish (``value`` None: a tombstone)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    partition: int | None = None  # None: by key


@dataclass(frozen=True)
class Topics:
    """The physical names of the topics the scorer reads and writes."""

    events: tuple[str, ...]
    deliveries: str
    erasures: str
    ticks: str
    signals: str
    scores: str
    cohorts: str
    cohort_stats: str

    @classmethod
    def from_settings(cls, settings: ScoringSettings) -> Topics:
        prefix = settings.common.topic_prefix
        return cls(
            events=tuple(topic_name(t, prefix) for t in Topic.events()),
            deliveries=topic_name(Topic.DELIVERIES, prefix),
            erasures=topic_name(Topic.ERASURES, prefix),
            ticks=f"{prefix}{settings.ticks_topic}",
            signals=topic_name(Topic.SIGNALS, prefix),
            scores=topic_name(Topic.SCORES, prefix),
            cohorts=f"{prefix}{settings.cohorts_topic}",
            cohort_stats=f"{prefix}{settings.cohort_stats_topic}",
        )

    def source(self, kind: Kind) -> str:
        """The topic of ``kind`` whose dead-letter topic takes a record whose own topic is
        not known (the first events topic for events)."""
        return {
            Kind.EVENTS: self.events[0],
            Kind.DELIVERIES: self.deliveries,
            Kind.TICKS: self.ticks,
            Kind.ERASURES: self.erasures,
        }[kind]


@dataclass(frozen=True)
class Deps:
    """What every handler reads besides its input: the model, the output topics and each
    plan's pooled cohort counts (the live mapping the cohort follower keeps current)."""

    model: ScoringModel
    topics: Topics
    cohorts: Mapping[str, CohortStats]


@dataclass(frozen=True)
class Step:
    """What handling one input decided."""

    customer_id: str
    label: str | None  # the input's outcome for its metric; None: not counted
    state: CustomerState | None = None  # to store; None: leave the stored state alone
    erase: bool = False  # delete the stored state
    records: tuple[Emit, ...] = ()
    outcome: Outcome | None = None  # the rule's answer (changes and snapshot, for metrics)
    redemption: str | None = None  # a loyalty redemption's status, when the input was one


def emitted(outcome: Outcome, topics: Topics) -> tuple[Emit, ...]:
    """The records of a rule's outcome: signal changes, the snapshot, cohort deltas."""
    key = outcome.state.customer_id.encode()
    records = [Emit(topics.signals, key, encode(change)) for change in outcome.changes]
    if outcome.snapshot is not None:
        records.append(Emit(topics.scores, key, encode(outcome.snapshot)))
    records += [
        Emit(topics.cohorts, delta.plan.encode(), orjson.dumps(delta.to_dict()))
        for delta in outcome.cohort
    ]
    return tuple(records)


def caused_by(
    records: tuple[Emit, ...], ingested_at: datetime | None, topics: Topics
) -> tuple[Emit, ...]:
    """``records`` with the ``ingested_at`` header of the event that caused them on the
    signal changes and the snapshot (the records the orchestrator reacts to); the same
    records when the event carried none."""
    if ingested_at is None:
        return records
    stamp = causation.header(ingested_at)
    reacted = (topics.signals, topics.scores)
    return tuple(
        replace(r, headers=(*r.headers, stamp)) if r.topic in reacted and r.value else r
        for r in records
    )


def _scored(outcome: Outcome, deps: Deps, redemption: str | None = None) -> Step:
    customer_id = outcome.state.customer_id
    if outcome.duplicate:
        return Step(customer_id, "duplicate", outcome=outcome)
    return Step(
        customer_id,
        "scored",
        state=outcome.state,
        records=emitted(outcome, deps.topics),
        outcome=outcome,
        redemption=redemption,
    )


def on_event(event: Event, state: CustomerState | None, *, now: datetime, deps: Deps) -> Step:
    """Fold a product event (idempotent per ``event_id``)."""
    current = state or CustomerState(event.customer_id)
    outcome = score(current, event, deps.model, now=now, cohorts=deps.cohorts)
    redemption = None
    if event.type == "reward_redeemed" and not outcome.duplicate:
        redemption = outcome.state.redemptions[-1]["status"]
    return _scored(outcome, deps, redemption)


def on_delivery(
    delivery: Delivery, state: CustomerState | None, *, now: datetime, deps: Deps
) -> Step:
    """Fold a notifier outcome into engagement (idempotent per notification and status)."""
    current = state or CustomerState(delivery.customer_id)
    return _scored(
        score_delivery(current, delivery, deps.model, now=now, cohorts=deps.cohorts), deps
    )


def on_tick(tick: Tick, state: CustomerState | None, *, now: datetime, deps: Deps) -> Step:
    """Re-evaluate a known customer at the later of the tick's time and ``now``."""
    if state is None:
        return Step(tick.customer_id, None)  # nothing known of this customer: no state made
    outcome = reevaluate(state, deps.model, max(tick.at, now), deps.cohorts)
    changed = bool(outcome.changes) or outcome.snapshot is not None
    return Step(
        tick.customer_id,
        "changed" if changed else "unchanged",
        state=outcome.state,
        records=emitted(outcome, deps.topics),
        outcome=outcome,
    )


def on_erasure(erasure: Erasure, state: CustomerState | None, *, now: datetime, deps: Deps) -> Step:
    """Forget an erased customer: its state goes, and a tombstone on ``scores`` removes its
    snapshot there and tells the orchestrator that scoring's part is done. Idempotent."""
    customer_id = erasure.customer_id
    tombstone = Emit(deps.topics.scores, customer_id.encode(), None)
    label = "erased" if state is not None else "unknown"
    return Step(customer_id, label, erase=state is not None, records=(tombstone,))


@dataclass(frozen=True)
class Route:
    """How an input kind is decoded (raising :class:`InvalidRecord`) and handled."""

    decode: Callable[[bytes], Any]
    handle: Callable[..., Step]


def _decoder(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(value: bytes) -> Any:
        try:
            return parse(value)
        except (ValidationError, ValueError) as exc:
            raise InvalidRecord(f"{type(exc).__name__}: {exc}") from exc

    return decode


ROUTES: Mapping[Kind, Route] = {
    Kind.EVENTS: Route(_decoder(parse_event), on_event),
    Kind.DELIVERIES: Route(_decoder(Delivery.model_validate_json), on_delivery),
    Kind.TICKS: Route(_decoder(Tick.model_validate_json), on_tick),
    Kind.ERASURES: Route(_decoder(Erasure.model_validate_json), on_erasure),
}

decode_cohort_delta = _decoder(lambda value: CohortRecord.model_validate_json(value).delta())


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    error: Exception,
    consumer: str,
) -> Emit:
    """The record for ``<topic>.dlq``: the original key, value and headers, and the error."""
    reason = str(error) if isinstance(error, InvalidRecord) else error
    return Emit(
        dlq_name(topic),
        key,
        value,
        tuple(
            dead_letter_headers(
                headers,
                error=reason,
                consumer=consumer,
                topic=topic,
                partition=partition,
                offset=offset,
            )
        ),
    )


# -- plan cohorts (across customers) --------------------------------------------------------


@dataclass(frozen=True)
class CohortStep:
    """What one plan-cohort delta did to its plan's row."""

    row: dict[str, Any]  # the plan's new row: {"months": aggregate, "published": stats dict}
    stats: CohortStats | None  # the plan's pooled counts now
    records: tuple[Emit, ...] = ()  # the new pooled counts, when they changed


def on_cohort_delta(
    delta: CohortDelta, row: dict[str, Any] | None, *, now: datetime, deps: Deps
) -> CohortStep:
    """Add ``delta`` to its plan's row; publish the plan's pooled counts if they changed."""
    row = row or {"months": {}, "published": None}
    aggregate = fold_delta(row["months"], delta, deps.model.clv)
    stats = pooled(aggregate, now, deps.model.clv)
    current = stats_to_dict(stats) if stats is not None else None
    records: tuple[Emit, ...] = ()
    if row["published"] != current:
        records = (Emit(deps.topics.cohort_stats, delta.plan.encode(), orjson.dumps(current)),)
    return CohortStep({"months": aggregate, "published": current}, stats, records)


def decode_stats(value: bytes | None) -> CohortStats | None:
    """A ``cohort-stats`` record's value: the pooled counts, or None (JSON null, tombstone).
    Raises ``ValueError``, ``KeyError`` or ``TypeError`` on a malformed record."""
    data = orjson.loads(value) if value else None
    return stats_from_dict(data) if data is not None else None


# -- the clock sweep ------------------------------------------------------------------------


def needs_tick(data: dict[str, Any], *, now: datetime, deps: Deps) -> bool:
    """Whether a stored state's evaluation at ``now`` would change anything (a signal, the
    snapshot, a cohort count): then it deserves a tick."""
    out = reevaluate(CustomerState.from_dict(data), deps.model, now, deps.cohorts)
    return bool(out.changes or out.snapshot is not None or out.cohort)


def tick_for(customer_id: str, now: datetime, topics: Topics) -> Emit:
    """The tick that makes the ticks agent re-evaluate ``customer_id``."""
    tick = Tick(customer_id=customer_id, at=now)
    return Emit(topics.ticks, customer_id.encode(), tick.model_dump_json().encode())
