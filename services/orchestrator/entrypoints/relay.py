"""The outbox relay: publishes committed outbox rows to Kafka, then marks them published.

At-least-once: a crash between publish and mark republishes; notification ids make
that harmless (the notifier's delivery log drops the second copy).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from common.kafka import KafkaPublisher
from common.runtime import sleep_or_stop
from orchestrator import metrics
from orchestrator.adapters import journeys as repo

log = logging.getLogger(__name__)


async def relay_once(engine: AsyncEngine, publisher: KafkaPublisher, *, limit: int) -> int:
    async with engine.begin() as conn:
        rows = await repo.claim_outbox(conn, limit)
        if not rows:
            return 0
        await publisher.publish_many(
            (
                row.topic,
                row.key,
                row.payload,
                [(k, str(v).encode()) for k, v in row.headers.items()],
            )
            for row in rows
        )
        await repo.mark_published(conn, [row.id for row in rows])
    metrics.OUTBOX_PUBLISHED.inc(len(rows))
    return len(rows)


async def run_relay(
    engine: AsyncEngine,
    publisher: KafkaPublisher,
    *,
    stop: asyncio.Event,
    poll_s: float,
    batch: int,
) -> None:
    while not stop.is_set():
        try:
            sent = await relay_once(engine, publisher, limit=batch)
        except Exception:
            log.exception("outbox relay failed; will retry")
            sent = 0
        if sent < batch:
            await sleep_or_stop(stop, poll_s)
