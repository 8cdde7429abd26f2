"""The faust application: events → per-customer state (RocksDB table) → signals and scores."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from pydantic import ValidationError

from common.events import parse_event
from common.kafka import encode
from common.topics import Topic, dlq_name, topic_name
from scoring import metrics
from scoring.domain.model import ScoringModel
from scoring.domain.rules import score
from scoring.domain.state import CustomerState
from scoring.settings import ScoringSettings

log = logging.getLogger(__name__)


def create_app(settings: ScoringSettings, model: ScoringModel) -> faust.App:
    """Build the faust app; nothing connects until the worker starts."""
    common = settings.common
    prefix = common.topic_prefix
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{common.kafka_bootstrap}",
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=common.topic_partitions,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    source = app.topic(*(topic_name(t, prefix) for t in Topic.events()))
    signals = app.topic(topic_name(Topic.SIGNALS, prefix))
    scores = app.topic(topic_name(Topic.SCORES, prefix))
    dlqs = {t: app.topic(dlq_name(topic_name(t, prefix))) for t in Topic.events()}
    states = app.Table(
        "customer-state",
        default=None,
        partitions=common.topic_partitions,
        options={"block_cache_size": settings.rocksdb_block_cache_mb * 1024 * 1024},
    )

    async def dead_letter(message: Any, error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"[:4000]
        topic = next(t for t in Topic.events() if topic_name(t, prefix) == message.topic)
        headers = [
            *(message.headers or []),
            ("dlq.error", reason.encode()),
            ("dlq.topic", message.topic.encode()),
            ("dlq.offset", str(message.offset).encode()),
        ]
        await dlqs[topic].send(key=message.key, value=message.value, headers=headers)
        log.warning(
            "event sent to dead-letter topic", extra={"topic": message.topic, "error": reason[:300]}
        )

    @app.agent(source)
    async def score_events(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                parsed = parse_event(message.value)
            except (ValidationError, ValueError) as exc:
                metrics.EVENTS.labels(kind="unknown", outcome="invalid").inc()
                await dead_letter(message, exc)
                continue
            key = parsed.customer_id
            started = time.perf_counter()
            raw = states.get(key)
            state = CustomerState.from_dict(raw) if raw else CustomerState(parsed.customer_id)
            outcome = score(state, parsed, model)
            metrics.SCORE_SECONDS.observe(time.perf_counter() - started)
            if outcome.duplicate:
                metrics.EVENTS.labels(kind=parsed.kind, outcome="duplicate").inc()
                continue
            states[key] = outcome.state.to_dict()
            for change in outcome.changes:
                metrics.SIGNAL_CHANGES.labels(change=change.change, name=change.name).inc()
                await signals.send(key=key.encode(), value=encode(change))
            if outcome.snapshot is not None:
                metrics.SNAPSHOTS.inc()
                await scores.send(key=key.encode(), value=encode(outcome.snapshot))
            metrics.EVENTS.labels(kind=parsed.kind, outcome="scored").inc()

    app.tenure_states = states  # type: ignore[attr-defined]
    return app
