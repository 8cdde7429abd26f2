"""Use cases of a customer's data rights: export everything kept, erase the customer.

Called by the operator API (``orchestrator.entrypoints.api.privacy``), by
``tenure customers export|erase`` and by the scores consumer (scoring's tombstone); see
:mod:`orchestrator.adapters.privacy` for what an erasure removes, anonymises and keeps.
These use cases span every service's tables in PostgreSQL (the notifier's too), so they
run on the SQL store only, the customer's live journeys ended through it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from common.clock import Clock
from common.topics import Topic, topic_name
from orchestrator import metrics
from orchestrator.adapters import privacy
from orchestrator.adapters.store import SqlJourneyStore
from orchestrator.service_layer.journeys import cancel_live

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Erased:
    """An erasure, as recorded (``removed``: rows removed or anonymised per store)."""

    erasure_id: str
    customer_id: str
    erased_at: datetime
    requested_by: str
    removed: dict[str, int]


async def erase_customer(
    customer_id: str,
    *,
    engine: AsyncEngine,
    clock: Clock,
    topic_prefix: str,
    requested_by: str,
) -> Erased:
    """Erase ``customer_id`` from PostgreSQL in one transaction and queue scoring's part
    (an ``erasures`` record, through the outbox). Idempotent in effect; blocks on the
    database. Raises what the database raises (nothing is erased then)."""
    now = clock.now()
    async with engine.begin() as conn:
        await cancel_live(customer_id, "erased", store=SqlJourneyStore(conn), now=now)
        record = await privacy.erase(
            conn,
            customer_id,
            now=now,
            requested_by=requested_by,
            erasures_topic=topic_name(Topic.ERASURES, topic_prefix),
        )
    metrics.ERASURES.labels(stage="postgres").inc()
    log.info("customer erased", extra={"erasure_id": record.erasure_id, "by": requested_by})
    return Erased(
        record.erasure_id, customer_id, record.erased_at, record.requested_by, record.removed
    )


async def scoring_erased(
    customer_id: str, *, engine: AsyncEngine, clock: Clock, topic_prefix: str
) -> bool:
    """Scoring erased the customer (its tombstone on ``scores``): forget the score, and
    complete the erasures that awaited it, erasing again what records in flight may have
    written since. False (only the score forgotten) when no erasure awaited it."""
    now = clock.now()
    async with engine.begin() as conn:
        store = SqlJourneyStore(conn)
        await store.customers.delete_score(customer_id)
        name = await privacy.confirm_scoring(conn, customer_id, now=now)
        if name is None:
            return False
        await cancel_live(customer_id, "erased", store=store, now=now)
        await privacy.erase_again(
            conn,
            customer_id,
            pseudonym=name,
            erasures_topic=topic_name(Topic.ERASURES, topic_prefix),
        )
    metrics.ERASURES.labels(stage="scoring").inc()
    return True


async def export_customer(
    customer_id: str, *, engine: AsyncEngine, clock: Clock
) -> dict[str, Any] | None:
    """Everything kept about ``customer_id`` as one JSON-ready document (dates as ISO
    strings, amounts as numbers), or None when nothing is kept. Reads only."""
    async with engine.connect() as conn:
        found = await privacy.export(conn, customer_id)
    if found is None:
        return None
    document = {"customer_id": customer_id, "exported_at": clock.now(), **found}
    return dict(orjson.loads(orjson.dumps(document, default=_number)))


def _number(value: Any) -> float:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
