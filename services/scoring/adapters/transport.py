"""A faust Kafka transport whose worker consumer reads only committed records.

faust-streaming 0.15.3 picks ``isolation_level="read_committed"`` only when
``processing_guarantee`` is ``exactly_once`` (``_create_worker_consumer`` in
``faust/transport/drivers/aiokafka.py``), and exactly-once also turns every output
into a Kafka transaction per partition, which the scorer does not need: its handlers
are idempotent per event id. faust has no setting for the isolation level alone, so
this transport builds the consumer exactly as faust does and switches it to
``read_committed`` before it starts (aiokafka reads the level when it creates its
fetcher in ``start()``). Records of an aborted transaction, e.g. an ingest write that
was answered 503, are then never seen.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver

READ_COMMITTED = "read_committed"


class ReadCommittedConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if not hasattr(consumer, "_isolation_level"):  # pragma: no cover - guards an upgrade
            raise RuntimeError("this aiokafka version keeps its isolation level elsewhere")
        consumer._isolation_level = READ_COMMITTED
        return consumer


class ReadCommittedConsumer(driver.Consumer):
    def _new_consumer_thread(self) -> ReadCommittedConsumerThread:
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ReadCommittedTransport(driver.Transport):
    Consumer = ReadCommittedConsumer


def use_read_committed(app: faust.App) -> None:
    """Make ``app``'s worker consume with ``read_committed``. Call before the worker starts."""
    app.transport = ReadCommittedTransport(app.conf.broker_consumer, app)


def isolation_level(app: faust.App) -> str | None:
    """The isolation level of ``app``'s running consumer (for tests and the log)."""
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    return getattr(consumer, "_isolation_level", None)
