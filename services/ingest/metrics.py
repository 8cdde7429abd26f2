"""Every metric of the ingest service, declared once."""

import functools

from prometheus_client import Counter

from common.metrics import build_info, counter, gauge, histogram

SERVICE = "ingest"

BUILD_INFO = build_info(SERVICE)

REQUESTS = counter(
    SERVICE,
    "requests",
    "HTTP requests answered, by route template and status.",
    ["route", "status"],
)
REQUEST_SECONDS = histogram(
    SERVICE, "request_seconds", "Time to answer an HTTP request, by route template.", ["route"]
)
EVENTS = counter(
    SERVICE,
    "events",
    "Events received, by kind, outcome (accepted, rejected, unavailable) and reason (the rule).",
    ["kind", "outcome", "reason"],
)


@functools.cache
def events(kind: str, outcome: str, reason: str) -> Counter:
    """:data:`EVENTS`' child for these labels, looked up once: ``labels()`` takes a lock
    and checks the label names at every call. Kinds, outcomes and rules are few."""
    return EVENTS.labels(kind=kind, outcome=outcome, reason=reason)


BATCH_EVENTS = histogram(
    SERVICE,
    "batch_events",
    "Events per POST /v1/batch request.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
)
PUBLISH_SECONDS = histogram(
    SERVICE,
    "publish_seconds",
    "Time from handing records to the producer to their acknowledgement.",
)
PRODUCER_INFLIGHT = gauge(
    SERVICE, "producer_inflight_events", "Events handed to the producer and not yet acknowledged."
)
PRODUCER_BUFFER_USAGE = gauge(
    SERVICE,
    "producer_buffer_usage_ratio",
    "Events in flight / TENURE_INGEST_MAX_INFLIGHT_EVENTS (1 = new events get 503).",
    multiprocess_mode="max",  # each worker has its own buffer: the fullest one matters
)
TRANSACTIONS = counter(
    SERVICE,
    "transactions",
    "Kafka transactions by outcome: committed, aborted (not acknowledged in time: the "
    "events got 503), failed (commit refused), unknown (no answer to the commit).",
    ["outcome"],
)
TRANSACTION_EVENTS = histogram(
    SERVICE,
    "transaction_events",
    "Events per Kafka transaction (the requests waiting when it began: group commit).",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
TRANSACTION_WAIT_SECONDS = histogram(
    SERVICE,
    "transaction_wait_seconds",
    "How long a transaction's longest-waiting request was queued before it began (every "
    "producer busy, or the spacing between transactions).",
)
TRANSACTION_SECONDS = histogram(
    SERVICE,
    "transaction_seconds",
    "Time from a transaction's beginning to its outcome (commit, abort): Kafka's part of "
    "publish_seconds.",
)
