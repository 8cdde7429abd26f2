"""Prometheus helpers: names are ``tenure_<service>_<what>``, declared once per service.

A service declares its metrics in its own ``metrics.py`` through these helpers, each
with a docstring-like ``documentation`` saying what it counts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, CollectorRegistry

__all__ = ["counter", "gauge", "histogram", "scrape_registry"]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set (to an empty directory) for a service running several worker processes: each
worker writes its values there and any one of them answers /metrics with the sum."""

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _name(service: str, name: str) -> str:
    if not service.isidentifier() or not name.isidentifier():
        raise ValueError(f"metric names must be identifiers: {service!r}, {name!r}")
    return f"tenure_{service}_{name}"


def counter(service: str, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
    """A counter named ``tenure_<service>_<name>`` (prometheus adds ``_total``)."""
    return Counter(_name(service, name), documentation, list(labels))


def gauge(
    service: str,
    name: str,
    documentation: str,
    labels: Sequence[str] = (),
    multiprocess_mode: Literal["livesum", "max", "min", "all"] = "livesum",
) -> Gauge:
    """A gauge; with several worker processes, ``multiprocess_mode`` says how their
    values combine (live workers only)."""
    return Gauge(
        _name(service, name), documentation, list(labels), multiprocess_mode=multiprocess_mode
    )


def histogram(
    service: str,
    name: str,
    documentation: str,
    labels: Sequence[str] = (),
    buckets: Sequence[float] = LATENCY_BUCKETS,
) -> Histogram:
    return Histogram(_name(service, name), documentation, list(labels), buckets=list(buckets))


def scrape_registry() -> CollectorRegistry:
    """What /metrics reports: this process, or every worker in multiprocess mode."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY
