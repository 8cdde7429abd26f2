"""Prometheus helpers: names are ``tenure_<service>_<what>``, declared once per service.

A service declares its metrics in its own ``metrics.py`` through these helpers, each
with a docstring-like ``documentation`` saying what it counts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, CollectorRegistry

__all__ = [
    "LagGauge",
    "build_info",
    "consumer_dead_letters",
    "consumer_lag",
    "counter",
    "gauge",
    "histogram",
    "scrape_registry",
]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set (to an empty directory) for a service running several worker processes: each
worker writes its values there and any one of them answers /metrics with the sum."""

BUILD_COMMIT_ENV = "TENURE_BUILD_COMMIT"
"""The commit a build came from (``CommonSettings.build_commit``'s variable, set by the
image build): read here, at import, because metrics are declared when their module is."""

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
    multiprocess_mode: Literal["livesum", "max", "min", "all", "mostrecent"] = "livesum",
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


def build_info(service: str) -> Gauge:
    """``tenure_<service>_build_info{version, commit} 1``: the package's version and the
    commit in ``TENURE_BUILD_COMMIT`` ("unknown" without it)."""
    try:
        release = version("tenure")
    except PackageNotFoundError:
        release = "unknown"
    commit = os.environ.get(BUILD_COMMIT_ENV) or "unknown"
    info = Gauge(
        _name(service, "build_info"),
        "Always 1; the labels say which release (version) and commit runs.",
        ["version", "commit"],
        multiprocess_mode="max",
    )
    info.labels(version=release, commit=commit).set(1)
    return info


def consumer_lag(service: str) -> Gauge:
    """``tenure_<service>_consumer_lag{group, topic, partition}``: records behind."""
    return gauge(
        service,
        "consumer_lag",
        "Records on a partition not yet processed by a consumer group (end offset minus "
        "committed offset, 0 where only transaction markers wait), per partition this "
        "process holds; measured every TENURE_METRICS_EVERY_S.",
        ["group", "topic", "partition"],
        multiprocess_mode="max",
    )


def consumer_dead_letters(service: str) -> Counter:
    """``tenure_<service>_consumer_dead_letters_total{topic}``: records a consumer could
    never process, sent to ``<topic>.dlq`` (``common.kafka.DeadLetters``' ``on_sent``)."""
    return counter(
        service,
        "consumer_dead_letters",
        "Records a consumer could not process (invalid), sent to <topic>.dlq, by topic.",
        ["topic"],
    )


class LagGauge:
    """A ``common.kafka.LagReport`` writing into a :func:`consumer_lag` gauge (or any gauge
    labelled group, topic, partition): each report sets the group's partitions and removes
    those it no longer holds (after a rebalance another member reports them)."""

    def __init__(self, lag: Gauge) -> None:
        self._gauge = lag
        self._held: dict[str, set[tuple[str, int]]] = {}

    def __call__(self, group: str, lags: Mapping[tuple[str, int], float]) -> None:
        for topic, partition in self._held.get(group, set()) - set(lags):
            self._gauge.remove(group, topic, str(partition))
        for (topic, partition), lag in lags.items():
            self._gauge.labels(group=group, topic=topic, partition=str(partition)).set(lag)
        self._held[group] = set(lags)


def scrape_registry() -> CollectorRegistry:
    """What /metrics reports: this process, or every worker in multiprocess mode."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY
