"""The analytics consumer: every payment event becomes the customer's MRR movement and
subscription state (``orchestrator.service_layer.analytics``).

A consumer group of its own (``<group_id>-analytics``) on ``events.payment``, apart from
the journey consumer: recording the portfolio never holds back a journey, and a replay
(at-least-once) writes the same rows. :func:`rebuild` runs the same handler over the
topic from a time on (``tenure analytics rebuild --since``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from common.events import PaymentEvent, parse_event
from common.kafka import INVALID, Handler, InvalidRecord, Record, read_since
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from orchestrator.entrypoints.deps import Deps
from orchestrator.service_layer.analytics import record_payment

log = logging.getLogger(__name__)


def decode(record: Record) -> PaymentEvent:
    """The payment event of ``record``; raises (``InvalidRecord`` or a validation error,
    a dead letter) for anything else."""
    event = parse_event(record.value)
    if not isinstance(event, PaymentEvent):
        raise InvalidRecord(f"kind: expected a payment event, got {event.kind}")
    return event


def analytics_handler(deps: Deps) -> Handler:
    """Decode a payment event and record what it does to the customer's MRR."""

    async def handle(record: Record) -> None:
        await record_payment(decode(record), stores=deps.stores, context=deps.context)

    return handle


@dataclass
class Rebuilt:
    """What a rebuild read and recorded."""

    records: int = 0
    invalid: int = 0  # skipped (the live consumer sent them to the dead-letter topic)
    movements: Counter[str] = field(default_factory=Counter)  # by kind
    states: int = 0


async def rebuild(deps: Deps, settings: CommonSettings, since: datetime) -> Rebuilt:
    """Record again every payment event that reached ``events.payment`` at ``since`` or
    later, as the analytics consumer does, up to the topic's end when called.

    Idempotent: the rows are keyed on the event id and classified against what was
    recorded before each event, so a rebuild over rows already there rewrites the same
    values, and one over a record that lacks them fills them in. Kafka's timestamp is
    when ingest published the event (ingest refuses events more than 5 minutes ahead
    of its clock), so every event that occurred since ``since`` is read. Raises
    ``TimeoutError`` when the topic stops answering, and
    :class:`common.outage.DatabaseUnavailable` without the database.
    """
    report = Rebuilt()
    topic = topic_name(Topic.EVENTS_PAYMENT, settings.topic_prefix)
    async for batch in read_since(settings, topic, since):
        for record in batch:
            report.records += 1
            try:
                event = decode(record)
            except INVALID as exc:
                report.invalid += 1
                log.warning(
                    "rebuild skipped an invalid record",
                    extra={
                        "partition": record.partition,
                        "offset": record.offset,
                        "error": str(exc),
                    },
                )
                continue
            found = await record_payment(event, stores=deps.stores, context=deps.context)
            if found is not None:
                report.states += 1
                if found.movement is not None:
                    report.movements[found.movement.kind.value] += 1
    return report
