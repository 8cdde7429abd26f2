"""Ingest's use cases: accept one event, accept a batch.

Each takes the request body as bytes and its dependencies as keyword arguments (a
:class:`~common.kafka.Publisher`, a :class:`~common.clock.Clock`, a :class:`RateLimit`
and the :class:`Policy` from the settings), and returns a plain result or raises an
:class:`~ingest.errors.IngestError`. Nothing here knows HTTP: ``ingest.api`` reads the
body, checks the key and picks the status codes.

An event is answered as accepted only once the publisher reports it acknowledged by
Kafka; one it could not publish is answered unavailable, and was not written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Protocol, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common import causation
from common.clock import Clock
from common.events import EVENT_MODELS, SCHEMA_VERSION, Event, EventBase, event_adapter
from common.kafka import OutgoingRecord, Publisher
from common.topics import events_topic
from ingest import metrics
from ingest.domain.admission import Rejection, check_occurred_at, retry_after_s
from ingest.errors import Invalid, RateLimited, TooLarge, Unavailable

Status = Literal["accepted", "rejected", "unavailable"]


class RateLimit(Protocol):
    """Events a second per API key."""

    def take(self, key_id: str, events: int) -> float:
        """Take ``events`` from the key's allowance: 0 if admitted, else the seconds until
        they would be (``inf``: never, more than the allowance holds). Never blocks."""
        ...


@dataclass(frozen=True)
class Policy:
    """The numbers the use cases apply (from :class:`~ingest.settings.IngestSettings`)."""

    max_future_skew: timedelta
    max_event_age: timedelta
    max_batch_events: int
    publish_timeout_s: float


@dataclass(frozen=True)
class Accepted:
    """One event, acknowledged by Kafka."""

    event_id: str


@dataclass(slots=True)
class EventOutcome:
    """What became of one event of a batch (``index``: its position in the batch).

    Not frozen: a frozen dataclass costs five times as much to make, 500 times a batch."""

    index: int
    event_id: str | None
    status: Status
    errors: tuple[Rejection, ...] = ()


@dataclass(frozen=True)
class BatchOutcome:
    """What became of every event of a batch, in the batch's order, and how many events
    had each status."""

    results: list[EventOutcome]
    counts: dict[Status, int]


async def accept_event(
    body: bytes,
    *,
    key_id: str,
    publisher: Publisher,
    clock: Clock,
    limiter: RateLimit,
    policy: Policy,
) -> Accepted:
    """Admit, validate and publish one event (JSON ``body``) sent with API key ``key_id``.

    Raises :class:`RateLimited`, :class:`Invalid` (nothing published) or
    :class:`Unavailable` (not acknowledged within ``policy.publish_timeout_s``: not
    written). Idempotent downstream: an event sent twice is dropped there by event id.
    """
    _admit_rate(limiter, key_id, 1)
    try:
        event: Event = event_adapter.validate_json(body)
    except ValidationError as exc:
        errors = field_errors(exc)
        _count("unknown", "rejected", errors[0].rule)
        raise Invalid("invalid event", errors=errors) from None
    now = clock.now()
    rejection = check_occurred_at(
        event.occurred_at, now=now, max_future=policy.max_future_skew, max_age=policy.max_event_age
    )
    if rejection is not None:
        _count(event.kind, "rejected", rejection.rule)
        raise Invalid("invalid event", errors=[rejection])
    [error] = await publisher.publish_each(
        records([event], key_id=key_id, now=now), timeout_s=policy.publish_timeout_s
    )
    if error is not None:
        _count(event.kind, "unavailable", "publish")
        raise Unavailable("event store unavailable, retry later")
    _count(event.kind, "accepted", "")
    return Accepted(event.event_id)


async def accept_batch(
    body: bytes,
    *,
    key_id: str,
    publisher: Publisher,
    clock: Clock,
    limiter: RateLimit,
    policy: Policy,
) -> BatchOutcome:
    """Admit a batch (JSON ``{"events": [...]}``), then validate and publish each event.

    Raises :class:`Invalid` when the body is not a batch, :class:`TooLarge` above
    ``policy.max_batch_events`` and :class:`RateLimited` for the batch as a whole; after
    that each event has its own outcome: rejected (with the rules it broke), accepted
    (acknowledged by Kafka) or unavailable (not written; retrying it is safe).
    """
    items = _batch_items(body, policy.max_batch_events)
    _admit_rate(limiter, key_id, len(items))
    metrics.BATCH_EVENTS.observe(len(items))
    now = clock.now()
    max_future, max_age = policy.max_future_skew, policy.max_event_age
    outcomes: list[EventOutcome] = []
    valid: list[tuple[int, Event]] = []
    tally: Counter[tuple[str, Status, str]] = Counter()
    for index, item in enumerate(items):
        if isinstance(item, EventBase):
            event: Event = cast("Event", item)  # one of the union's models
        else:  # not an event: validated again on its own, for its errors
            try:
                event = event_adapter.validate_python(item)
            except ValidationError as exc:
                errors = tuple(field_errors(exc))
                event_id = item.get("event_id") if isinstance(item, dict) else None
                if not isinstance(event_id, str):
                    event_id = None
                outcomes.append(EventOutcome(index, event_id, "rejected", errors))
                tally["unknown", "rejected", errors[0].rule] += 1
                continue
        rejection = check_occurred_at(
            event.occurred_at, now=now, max_future=max_future, max_age=max_age
        )
        if rejection is not None:
            outcomes.append(EventOutcome(index, event.event_id, "rejected", (rejection,)))
            tally[event.kind, "rejected", rejection.rule] += 1
            continue
        valid.append((index, event))
    if valid:
        published = await publisher.publish_each(
            records([e for _, e in valid], key_id=key_id, now=now),
            timeout_s=policy.publish_timeout_s,
        )
        for (index, event), error in zip(valid, published, strict=True):
            status: Status = "accepted" if error is None else "unavailable"
            outcomes.append(EventOutcome(index, event.event_id, status))
            tally[event.kind, status, "" if error is None else "publish"] += 1
    for (kind, outcome, reason), n in tally.items():
        _count(kind, outcome, reason, n)
    outcomes.sort(key=lambda r: r.index)
    counts: dict[Status, int] = {"accepted": 0, "rejected": 0, "unavailable": 0}
    for (_, status, _), n in tally.items():
        counts[status] += n
    return BatchOutcome(outcomes, counts)


def records(events: Iterable[Event], *, key_id: str, now: datetime) -> list[OutgoingRecord]:
    """Key = customer id, value = the validated event, headers ``kind``,
    ``schema_version``, ``ingested_at`` and ``api_key_id``; the topic is the kind's."""
    shared = [
        ("schema_version", _SCHEMA_VERSION),
        causation.header(now),
        ("api_key_id", key_id.encode()),
    ]
    by_kind: dict[str, list[tuple[str, bytes]]] = {}  # one headers list per kind, shared
    out: list[OutgoingRecord] = []
    for e in events:
        headers = by_kind.get(e.kind)
        if headers is None:
            headers = by_kind[e.kind] = [("kind", _KINDS[e.kind]), *shared]
        out.append((_TOPICS[e.kind], e.customer_id, e, headers))
    return out


def field_errors(exc: ValidationError) -> list[Rejection]:
    """Pydantic's errors as (field path, rule, message); the path leaves out the kind tag
    of the union, and an unknown or missing kind is reported on ``kind``."""
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in EVENT_MODELS:
            loc = loc[1:]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["kind"]
        out.append(Rejection(".".join(loc) or "(body)", err["type"], err["msg"]))
    return out


_TOPICS = {kind: events_topic(kind) for kind in EVENT_MODELS}
_KINDS = {kind: kind.encode() for kind in EVENT_MODELS}
_SCHEMA_VERSION = str(SCHEMA_VERSION).encode()


def _admit_rate(limiter: RateLimit, key_id: str, events: int) -> None:
    wait = limiter.take(key_id, events)
    if wait > 0:
        raise RateLimited("rate limit exceeded for this API key", retry_after_s=retry_after_s(wait))


def _count(kind: str, outcome: str, reason: str, n: int = 1) -> None:
    metrics.events(kind, outcome, reason).inc(n)


class _Batch(BaseModel):
    """A batch's shape. Each item is validated as an event where it lies (from the JSON,
    in the one call), and left as it was when it is not one."""

    model_config = ConfigDict(extra="forbid")

    events: list[Annotated[Event | Any, Field(union_mode="left_to_right")]] = Field(min_length=1)


def _batch_items(body: bytes, max_events: int) -> list[Any]:
    """The items of a batch body: events, or what could not be validated as one; raises
    :class:`Invalid` for a body that is not ``{"events": [one or more]}`` and
    :class:`TooLarge` above ``max_events``."""
    try:
        items = _Batch.model_validate_json(body).events
    except ValidationError as exc:
        errors = exc.errors()
        if errors[0]["type"] == "json_invalid":
            rejection = Rejection("(body)", "json_invalid", errors[0]["msg"])
        elif [(e["type"], e["loc"]) for e in errors] == [("too_short", ("events",))]:
            rejection = Rejection("events", "too_short", "a batch needs at least one event")
        else:
            rejection = Rejection(
                "events",
                "batch_shape",
                'the body must be {"events": [event, ...]} and nothing else',
            )
        raise Invalid("invalid batch", errors=[rejection]) from None
    if len(items) > max_events:
        raise TooLarge(f"more than {max_events} events in one batch")
    return items
