"""Every metric of the scoring service, declared once."""

from collections.abc import Callable
from functools import cache
from typing import Any

from common.metrics import build_info, counter, histogram

SERVICE = "scoring"

BUILD_INFO = build_info(SERVICE)

EVENTS = counter(
    SERVICE,
    "events",
    "Events consumed, by kind and outcome (scored, duplicate, invalid).",
    ["kind", "outcome"],
)
DELIVERIES = counter(
    SERVICE,
    "deliveries",
    "Notifier outcomes consumed, by outcome (scored, duplicate, invalid).",
    ["outcome"],
)
TICKS = counter(
    SERVICE,
    "ticks",
    "Clock re-evaluations of one customer, by outcome (changed, unchanged, invalid).",
    ["outcome"],
)
SWEPT = counter(
    SERVICE, "swept", "Customers looked at by the clock sweep (time-driven conditions)."
)
SIGNAL_CHANGES = counter(
    SERVICE, "signal_changes", "Signal changes emitted, by change and name.", ["change", "name"]
)
SNAPSHOTS = counter(SERVICE, "snapshots", "Score snapshots emitted on the scores topic.")
SCORE_SECONDS = histogram(SERVICE, "score_seconds", "Time to fold and evaluate one input.")
COHORT_DELTAS = counter(
    SERVICE,
    "cohort_deltas",
    "Plan-cohort deltas summed by the cohort agent, by outcome (counted, invalid).",
    ["outcome"],
)
COHORT_UPDATES = counter(
    SERVICE, "cohort_updates", "Changes of a plan's pooled cohort counts (what CLV reads)."
)
REDEMPTIONS = counter(
    SERVICE, "redemptions", "Loyalty redemptions, by outcome (accepted, refused).", ["outcome"]
)


def bound(metric: Any) -> Callable[..., Any]:
    """``metric.labels(*values)``, memoised per label values (one dict lookup per event
    instead of prometheus_client's label validation and lock)."""
    return cache(metric.labels)


ERASURES = counter(
    SERVICE,
    "erasures",
    "Erasure records consumed, by outcome (erased: state deleted and tombstones sent; "
    "unknown: no state was kept; invalid).",
    ["outcome"],
)
INGEST_TO_SNAPSHOT_SECONDS = histogram(
    SERVICE,
    "ingest_to_snapshot_seconds",
    "Real seconds from ingest accepting an event to the score snapshot it caused being "
    "handed to the producer (events with an ingested_at header only).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
