"""Kafka consumers: decode each record, hand it to its use case.

:data:`ROUTES` maps every topic the orchestrator consumes to the decoder of its records;
:func:`router` gives the consumer loop one ``handle(record)`` that decodes and calls
:func:`orchestrator.service_layer.messages.handle` (routed by message type). A record
that does not decode raises (``InvalidRecord`` or a validation error) and goes to the
dead-letter topic; scoring's tombstone on ``scores`` (it erased a customer) goes to the
privacy use case.
"""

from __future__ import annotations

from collections.abc import Callable

from common import causation
from common.events import LoginEvent, PaymentEvent, ProfileEvent, parse_event
from common.kafka import Handler, InvalidRecord, Record
from common.messages import Delivery, ScoreSnapshot, SignalChange
from common.topics import Topic, topic_name
from orchestrator import metrics
from orchestrator.entrypoints.deps import Deps
from orchestrator.service_layer import messages
from orchestrator.service_layer.privacy import scoring_erased

Decoder = Callable[[Record], messages.Message]


def _event(kind: type[ProfileEvent | PaymentEvent | LoginEvent], name: str) -> Decoder:
    def decode(record: Record) -> messages.Message:
        event = parse_event(record.value)
        if not isinstance(event, kind):
            raise InvalidRecord(f"kind: expected a {name} event, got {event.kind}")
        return event

    return decode


ROUTES: dict[Topic, Decoder] = {
    Topic.EVENTS_PROFILE: _event(ProfileEvent, "profile"),
    Topic.EVENTS_PAYMENT: _event(PaymentEvent, "payment"),
    Topic.EVENTS_LOGIN: _event(LoginEvent, "login"),
    Topic.SIGNALS: lambda record: SignalChange.model_validate_json(record.value),
    Topic.SCORES: lambda record: ScoreSnapshot.model_validate_json(record.value),
    Topic.DELIVERIES: lambda record: Delivery.model_validate_json(record.value),
}


def router(deps: Deps) -> Handler:
    """One handler for the consumer loop, dispatching on the record's topic."""
    by_name = {topic_name(t, deps.topic_prefix): (t, decode) for t, decode in ROUTES.items()}

    async def handle(record: Record) -> None:
        topic, decode = by_name[record.topic]
        metrics.RECORDS.labels(topic=topic.value).inc()
        if topic is Topic.SCORES and not record.value and record.key:
            # scoring's tombstone: it erased the customer
            await scoring_erased(
                record.key, engine=deps.engine, clock=deps.clock, topic_prefix=deps.topic_prefix
            )
            return
        await messages.handle(
            decode(record),
            stores=deps.stores,
            context=deps.context,
            ingested_at=causation.ingested_at(record.headers),
        )

    return handle
