"""The limit the scoring worker is compared with: the same pure rules in a bare loop.

``python -m bench.scoring_loop``: an aiokafka consumer of the six ``events.*`` topics
(``read_committed``, like the worker), per-customer state in a Python dict (no
RocksDB, no changelog, no faust), the same ``scoring.domain.rules.score`` with the same
state (de)serialisation, and the changes and snapshots produced to ``signals`` and
``scores`` (and plan-cohort deltas to ``scoring.cohorts``) with ``acks=all``; offsets
committed every second. It counts processed events in the worker's own metric
(``tenure_scoring_events_total``) on the metrics port, so the benchmark measures both
the same way. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError

from common.clock import ScaledClock
from common.events import parse_event
from common.kafka import KeyPartitioner, encode
from common.runtime import serve_metrics
from common.topics import Topic, topic_name
from scoring import metrics
from scoring.domain.model import DEFAULT_MODEL_PATH, load_model
from scoring.domain.rules import score
from scoring.domain.state import CustomerState


async def run(bootstrap: str, prefix: str, group: str) -> None:
    model = load_model(DEFAULT_MODEL_PATH)
    clock = ScaledClock(scale=1.0)
    consumer = AIOKafkaConsumer(
        *(topic_name(t, prefix) for t in Topic.events()),
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=2, partitioner=KeyPartitioner()
    )
    signals, scores = topic_name(Topic.SIGNALS, prefix), topic_name(Topic.SCORES, prefix)
    cohorts = f"{prefix}scoring.cohorts"
    states: dict[str, Any] = {}
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    await consumer.start()
    await producer.start()
    last_commit = time.monotonic()
    try:
        while not stopping.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            for records in batch.values():
                for record in records:
                    try:
                        event = parse_event(record.value)
                    except (ValidationError, ValueError):
                        metrics.EVENTS.labels(kind="unknown", outcome="invalid").inc()
                        continue
                    cid = event.customer_id
                    raw = states.get(cid)
                    state = CustomerState.from_dict(raw) if raw else CustomerState(cid)
                    outcome = score(state, event, model, now=clock.now())
                    if outcome.duplicate:
                        metrics.EVENTS.labels(kind=event.kind, outcome="duplicate").inc()
                        continue
                    states[cid] = outcome.state.to_dict()
                    key = cid.encode()
                    for change in outcome.changes:
                        await producer.send(signals, key=key, value=encode(change))
                    if outcome.snapshot is not None:
                        await producer.send(scores, key=key, value=encode(outcome.snapshot))
                    for delta in outcome.cohort:  # the worker's cohort deltas, for parity
                        await producer.send(
                            cohorts, key=delta.plan.encode(), value=orjson.dumps(delta.to_dict())
                        )
                    metrics.EVENTS.labels(kind=event.kind, outcome="scored").inc()
            if time.monotonic() - last_commit > 1.0:
                await producer.flush()
                await consumer.commit()
                last_commit = time.monotonic()
    finally:
        with contextlib.suppress(Exception):
            await producer.flush()
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scoring_loop")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args()
    serve_metrics("127.0.0.1", args.metrics_port)
    asyncio.run(run(args.bootstrap, args.prefix, args.group))


if __name__ == "__main__":
    main()
