"""Ingest's side of its ports: the publisher bounded by the events in flight, the rate
limit on real time, and the transaction reports turned into metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.kafka import OutgoingRecord, Publisher, PublishError, TransactionReport
from common.topics import Topic
from ingest import metrics
from ingest.domain.admission import RateLimiter

Headers = Sequence[tuple[str, bytes]]


class BoundedPublisher:
    """A :class:`~common.kafka.Publisher` that refuses records beyond ``max_inflight``
    events awaiting acknowledgement: they get a :class:`PublishError` at once (the
    caller answers 503) instead of queueing without bound while Kafka is slow."""

    def __init__(self, publisher: Publisher, *, max_inflight: int) -> None:
        self.publisher = publisher
        self.max_inflight = max_inflight
        self.inflight = 0
        """Events handed to the publisher and not yet answered."""

    @property
    def full(self) -> bool:
        return self.inflight >= self.max_inflight

    async def publish(
        self, topic: Topic | str, key: str, value: Any, headers: Headers | None = None
    ) -> None:
        """The wrapped publisher's :meth:`publish`; :class:`PublishError` when full."""
        if self.inflight + 1 > self.max_inflight:
            raise PublishError("producer buffer full")
        self._set_inflight(self.inflight + 1)
        try:
            await self.publisher.publish(topic, key, value, headers)
        finally:
            self._set_inflight(self.inflight - 1)

    async def publish_each(
        self, records: Sequence[OutgoingRecord], *, timeout_s: float
    ) -> list[PublishError | None]:
        """The wrapped publisher's :meth:`publish_each`, unless the records would take the
        events in flight past ``max_inflight``: then an error for each, nothing sent."""
        if self.inflight + len(records) > self.max_inflight:
            return [PublishError("producer buffer full")] * len(records)
        self._set_inflight(self.inflight + len(records))
        started = time.perf_counter()
        try:
            outcomes = await self.publisher.publish_each(records, timeout_s=timeout_s)
        finally:
            self._set_inflight(self.inflight - len(records))
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        return outcomes

    async def ready(self, timeout_s: float) -> str | None:
        """The wrapped publisher's readiness; not ready either while the buffer is full."""
        reason = await self.publisher.ready(timeout_s)
        if reason is None and self.full:
            return "producer buffer full"
        return reason

    def _set_inflight(self, events: int) -> None:
        self.inflight = events
        metrics.PRODUCER_INFLIGHT.set(events)
        metrics.PRODUCER_BUFFER_USAGE.set(events / self.max_inflight)


@dataclass
class RealTimeRateLimit:
    """:class:`~ingest.service.RateLimit` by token buckets per key on the monotonic clock:
    a rate limit is about real seconds, also where the deployment's clock is scaled."""

    limiter: RateLimiter
    monotonic: Callable[[], float] = field(default=time.monotonic)

    def take(self, key_id: str, events: int) -> float:
        return self.limiter.take(key_id, events, self.monotonic())


def observe_transaction(report: TransactionReport) -> None:
    """A transaction of ingest's publisher, into ingest's metrics."""
    metrics.TRANSACTIONS.labels(outcome=report.outcome).inc()
    metrics.TRANSACTION_EVENTS.observe(report.events)
    metrics.TRANSACTION_WAIT_SECONDS.observe(report.waited_s)
    metrics.TRANSACTION_SECONDS.observe(report.seconds)
