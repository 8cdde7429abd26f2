"""Projects every delivery outcome into ``message_outcomes`` for the operator API.

A consumer group of its own (``<group_id>-outcomes``) on the deliveries topic, apart
from the journey consumers: showing a message's history never holds back a journey,
and a replay (at-least-once) changes nothing, the projection being idempotent.
"""

from __future__ import annotations

from common.kafka import Handler, Record
from common.messages import Delivery
from orchestrator.adapters import operator as views
from orchestrator.entrypoints.deps import Deps


def outcome_handler(deps: Deps) -> Handler:
    """Decode a ``Delivery`` (an invalid one goes to the DLQ) and record its outcome."""

    async def handle(record: Record) -> None:
        delivery = Delivery.model_validate_json(record.value)
        async with deps.engine.begin() as conn:
            await views.record_outcome(conn, delivery)

    return handle
