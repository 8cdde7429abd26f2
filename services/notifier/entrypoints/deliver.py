"""The notifier's two loops over the delivery use cases: the consumer of ``notifications``
and the retry worker. What happens to a notification is decided in
:mod:`notifier.service_layer.delivery`; this module only wires it to Kafka and a timer."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from common import causation
from common.kafka import REPLAYED_FROM, Consumer, KeyedParallel, Record, run_consumer
from common.outage import DatabaseUnavailable, ride_out
from common.runtime import sleep_or_stop
from notifier import metrics
from notifier.service_layer import delivery
from notifier.service_layer.context import Dependencies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deliverer(Dependencies):
    """The delivery use cases bound to their dependencies, as the loops call them."""

    async def handle(self, record: Record) -> None:
        """Deliver one record of ``notifications`` (see :func:`delivery.receive`)."""
        await delivery.receive(
            record.value,
            deps=self,
            ingested_at=causation.ingested_at(record.headers),
            replayed=any(key == REPLAYED_FROM for key, _ in record.headers),
        )

    async def retry_due(self) -> int:
        """See :func:`delivery.retry_due`."""
        return await delivery.retry_due(deps=self)

    async def report_unreported(self) -> int:
        """See :func:`delivery.report_unreported`."""
        return await delivery.report_unreported(deps=self)


async def consume(consumer: Consumer, deliverer: Deliverer, *, stop: asyncio.Event) -> None:
    """Deliver the records of ``notifications`` until ``stop``, with the shared runner's
    keyed-parallel strategy: customers in parallel, up to ``delivery_concurrency``
    notifications in flight, one customer's in order. At-least-once; the delivery log
    makes a replay send nothing twice. See :func:`common.kafka.run_consumer`."""
    await run_consumer(
        consumer,
        deliverer.handle,
        deliverer.dead_letters,
        stop=stop,
        name="notifier consumer",
        strategy=KeyedParallel(concurrency=deliverer.settings.delivery_concurrency),
        report_lag=metrics.report_lag,
        lag_every_s=deliverer.settings.common.metrics_every_s,
    )


async def retry_loop(deliverer: Deliverer, *, stop: asyncio.Event) -> None:
    """Poll the retry schedule every ``retry_poll_s`` real seconds until ``stop``; a
    database outage is waited out."""

    async def poll() -> int:
        attempted = await deliverer.retry_due()
        await deliverer.report_unreported()
        return attempted

    while not stop.is_set():
        try:
            attempted = await ride_out(poll, what="retry worker", stop=stop)
        except DatabaseUnavailable:
            break  # stopping during an outage
        except Exception:
            log.exception("retry poll failed")
            attempted = 0
        if attempted < deliverer.settings.retry_batch:
            await sleep_or_stop(stop, deliverer.settings.retry_poll_s)
