"""The outbox relay: publishes committed outbox rows to Kafka, each exactly once.

One relay at a time across all replicas: the leader holds a PostgreSQL advisory lock
on a connection of its own (it goes with that connection: a killed replica loses it at
once) and a Kafka transactional producer under one shared ``transactional_id``. Each
round locks a batch of unpublished rows, writes them in one Kafka transaction (each
with an ``outbox_id`` header), then marks them published together with the topic
offsets after the batch (``relay_checkpoint``), in the transaction that locked them.

The one gap of an at-least-once relay, a crash after Kafka committed a batch and before
PostgreSQL marked it, is closed on takeover: starting the new leader's producer fences
its predecessors (the broker aborts any transaction they left open), then the new
leader reads the topic (``read_committed``) from the checkpoint to its end, marks the
rows whose ``outbox_id`` it finds there, and only then publishes. So a
``read_committed`` reader sees each outbox row once. Readers with ``read_uncommitted``
could see records of an aborted transaction, which are written again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from common.kafka import FencedProducer, OutgoingRecord, committed_headers
from common.outage import DatabaseUnavailable, ride_out
from common.runtime import sleep_or_stop
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from orchestrator import metrics
from orchestrator.adapters import outbox, relay_store

log = logging.getLogger(__name__)

OUTBOX_ID = "outbox_id"


class BatchPublisher(Protocol):
    """A :class:`common.kafka.FencedProducer` (exactly once), or a plain publisher."""

    async def publish_batch(
        self, records: Sequence[OutgoingRecord]
    ) -> dict[tuple[str, int], int]: ...


async def relay_once(engine: AsyncEngine, producer: BatchPublisher, *, limit: int) -> int:
    """Publish up to ``limit`` unpublished outbox rows in one Kafka transaction; how many.

    Call only while leading (see :func:`run_relay`). Raises ``PublishError`` when Kafka
    did not commit (then nothing is marked and the rows are tried again).
    """
    async with engine.begin() as conn:
        rows = await outbox.claim(conn, limit)
        if not rows:
            return 0
        after = await producer.publish_batch(
            [
                (
                    row.topic,
                    row.key,
                    row.payload,
                    [(k, str(v).encode()) for k, v in row.headers.items()]
                    + [(OUTBOX_ID, str(row.id).encode())],
                )
                for row in rows
            ]
        )
        await outbox.mark_published(conn, [row.id for row in rows])
        await relay_store.advance(conn, after)
    metrics.OUTBOX_PUBLISHED.inc(len(rows))
    return len(rows)


async def recover(engine: AsyncEngine, settings: CommonSettings) -> int:
    """Mark the rows a previous leader published but did not mark; how many.

    Call after the new leader's producer started (its predecessors are fenced, so what
    they wrote is final). A topic without a checkpoint (first run) gets one at its
    current end, before anything is published.
    """
    async with engine.begin() as conn:
        known = await relay_store.checkpoint(conn)
    topics = set(known) | {
        topic_name(t, settings.topic_prefix) for t in (Topic.NOTIFICATIONS, Topic.ERASURES)
    }
    found: list[int] = []
    after: dict[tuple[str, int], int] = {}
    for topic in sorted(topics):
        values, ends = await committed_headers(settings, topic, known.get(topic), OUTBOX_ID)
        found += [int(v) for v in values]
        after.update({(topic, p): o for p, o in ends.items()})
    async with engine.begin() as conn:
        marked = await relay_store.mark_found(conn, found)
        await relay_store.advance(conn, after)
    if marked:
        metrics.OUTBOX_RECOVERED.inc(marked)
        log.warning("outbox rows published by a previous relay, now marked: %d", marked)
    return marked


async def _lead(
    engine: AsyncEngine,
    settings: CommonSettings,
    *,
    stop: asyncio.Event,
    poll_s: float,
    batch: int,
    transactional_id: str,
) -> None:
    """Relay while this process holds the relay lock; return at once if another does."""
    async with engine.connect() as lock:
        try:
            leading = await relay_store.try_lead(lock)
            await lock.commit()
            if not leading:
                return
            producer = FencedProducer(
                settings, client_id="tenure-orchestrator-relay", transactional_id=transactional_id
            )
            await producer.start()
            try:
                await recover(engine, settings)
                log.info("outbox relay leading")
                while not stop.is_set():
                    await lock.execute(sa.select(1))  # the lock lives as long as this session
                    await lock.commit()
                    sent = await relay_once(engine, producer, limit=batch)
                    if sent < batch:
                        await sleep_or_stop(stop, poll_s)
            finally:
                await producer.stop()
        finally:
            # Never hand a connection holding the lock back to the pool.
            await lock.invalidate()


async def run_relay(
    engine: AsyncEngine,
    settings: CommonSettings,
    *,
    stop: asyncio.Event,
    poll_s: float,
    batch: int,
    transactional_id: str,
) -> None:
    """Relay the outbox until ``stop``: lead when no other replica does, else stand by.

    When the database goes away the relay lets go of the lead (its lock went with its
    session) and waits for the database with backoff; back, it leads again (recovering
    what the last batch may have left unmarked) or stands by.
    """
    while not stop.is_set():
        try:
            await ride_out(
                lambda: _lead(
                    engine,
                    settings,
                    stop=stop,
                    poll_s=poll_s,
                    batch=batch,
                    transactional_id=transactional_id,
                ),
                what="outbox relay",
                stop=stop,
            )
        except DatabaseUnavailable:
            break  # stopping during an outage
        except Exception:
            log.exception("outbox relay failed; will retry")
        await sleep_or_stop(stop, poll_s)
