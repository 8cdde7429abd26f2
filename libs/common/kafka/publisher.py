"""The plain publisher: one idempotent aiokafka producer (acks=all), and its Protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from common.kafka.records import Headers, OutgoingRecord, PublishError, encode
from common.kafka.security import client_options
from common.settings import CommonSettings
from common.topics import Topic, topic_name


class Publisher(Protocol):
    """Publishes records and returns once the broker acknowledged them (acks=all)."""

    async def publish(
        self,
        topic: Topic | str,
        key: str,
        value: BaseModel | dict[str, Any] | bytes,
        headers: Headers | None = None,
    ) -> None:
        """Publish one record. Blocks until acknowledged; raises :class:`PublishError`."""
        ...

    async def publish_each(
        self, records: Sequence[OutgoingRecord], *, timeout_s: float
    ) -> list[PublishError | None]:
        """Publish records, pipelined; the outcome of each (None = acknowledged).

        Returns within about ``timeout_s``: a record not acknowledged by then gets a
        :class:`PublishError` (it may still be written later, so a retry can duplicate
        it; consumers drop duplicates by event id). Never raises for a broker failure.
        """
        ...

    async def ready(self, timeout_s: float) -> str | None:
        """None if the cluster answers a metadata request in time, else the reason."""
        ...


async def cluster_ready(producer: AIOKafkaProducer, timeout_s: float) -> str | None:
    """None if the cluster answers ``producer``'s metadata request in time, else why not."""
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        return f"Kafka metadata request failed: {exc!r}"
    if not producer.client.cluster.brokers():
        return "no broker known"
    return None


class KafkaPublisher:
    """The real :class:`Publisher`: one idempotent aiokafka producer."""

    def __init__(self, settings: CommonSettings, *, client_id: str, **overrides: Any) -> None:
        self._prefix = settings.topic_prefix
        options: dict[str, Any] = {
            **client_options(settings),
            "client_id": client_id,
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": settings.producer_linger_ms,
            "request_timeout_ms": settings.producer_request_timeout_ms,
        }
        options.update(overrides)
        self._options = options
        self._producer: AIOKafkaProducer | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("publisher not started")
        return self._producer

    async def start(self) -> None:
        """Connect; aiokafka needs the running loop, so the producer is built here."""
        self._producer = AIOKafkaProducer(**self._options)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def name(self, topic: Topic | str) -> str:
        return topic_name(topic, self._prefix) if isinstance(topic, Topic) else topic

    async def publish(
        self,
        topic: Topic | str,
        key: str,
        value: BaseModel | dict[str, Any] | bytes,
        headers: Headers | None = None,
    ) -> None:
        try:
            await self.producer.send_and_wait(
                self.name(topic), encode(value), key=key.encode(), headers=list(headers or [])
            )
        except KafkaError as exc:
            raise PublishError(f"publish to {self.name(topic)} failed: {exc!r}") from exc

    async def publish_each(
        self, records: Sequence[OutgoingRecord], *, timeout_s: float
    ) -> list[PublishError | None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        outcomes: list[PublishError | None] = [None] * len(records)
        futures: dict[asyncio.Future[Any], int] = {}
        i = 0
        try:
            # send() waits for metadata and for room in the buffer: bounded by the same
            # deadline (one timeout for the loop, not a task per record).
            async with asyncio.timeout_at(deadline):
                for i, (topic, key, value, headers) in enumerate(records):
                    future = await self.producer.send(
                        self.name(topic), encode(value), key=key.encode(), headers=list(headers)
                    )
                    futures[future] = i
                i = len(records)
        except (KafkaError, TimeoutError) as exc:
            for j in range(i, len(records)):
                outcomes[j] = PublishError(f"not sent: {exc!r}")
        if futures:
            done, pending = await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
            for future in done:
                if future.exception() is not None:
                    outcomes[futures[future]] = PublishError(repr(future.exception()))
            for future in pending:
                outcomes[futures[future]] = PublishError("not acknowledged in time")
        return outcomes

    async def ready(self, timeout_s: float) -> str | None:
        if self._producer is None:
            return "producer not started"
        return await cluster_ready(self._producer, timeout_s)

    async def publish_many(
        self,
        records: Iterable[tuple[Topic | str, str, BaseModel | dict[str, Any] | bytes, Headers]],
    ) -> None:
        """Publish several records, pipelined; returns when all are acknowledged."""
        try:
            futures = [
                await self.producer.send(
                    self.name(topic), encode(value), key=key.encode(), headers=list(headers)
                )
                for topic, key, value, headers in records
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise PublishError(f"publish failed: {exc!r}") from exc

    async def publish_batch(self, records: Sequence[OutgoingRecord]) -> dict[tuple[str, int], int]:
        """Like :meth:`publish_many`; returns per (topic, partition) the offset after them.

        Not atomic: on error some records may be written (see :class:`FencedProducer`).
        """
        try:
            futures = [
                await self.producer.send(
                    self.name(topic), encode(value), key=key.encode(), headers=list(headers)
                )
                for topic, key, value, headers in records
            ]
            written = await asyncio.gather(*futures)
        except KafkaError as exc:
            raise PublishError(f"publish failed: {exc!r}") from exc
        return offsets_after(written)


def offsets_after(written: Iterable[Any]) -> dict[tuple[str, int], int]:
    after: dict[tuple[str, int], int] = {}
    for meta in written:
        where = (meta.topic, meta.partition)
        after[where] = max(after.get(where, 0), meta.offset + 1)
    return after
