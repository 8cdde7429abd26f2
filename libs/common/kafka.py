"""Kafka for every service: the only module that imports aiokafka.

Producers are idempotent with ``acks=all``; values are JSON (orjson, or
pydantic's serializer for models); the key is the customer id. Consumers commit
manually after their handler ran, so processing is at-least-once and handlers
must be idempotent. A record that cannot be decoded or validated goes to the
topic's dead-letter topic with the error; the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from pydantic import BaseModel, ValidationError

from common.settings import CommonSettings
from common.topics import Topic, dlq_name, topic_name

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]


class PublishError(Exception):
    """The broker did not acknowledge a record (unreachable, timed out or refused)."""


class InvalidRecord(Exception):
    """A record that can never be processed: it goes to the dead-letter topic."""


def encode(value: BaseModel | dict[str, Any] | bytes) -> bytes:
    """Serialise a record value as JSON bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    return orjson.dumps(value)


OutgoingRecord = tuple["Topic | str", str, "BaseModel | dict[str, Any] | bytes", Headers]
"""(topic, key, value, headers) of a record to publish."""


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


@dataclass
class Published:
    topic: str
    key: str
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class FakePublisher:
    """In-memory publisher for unit tests."""

    prefix: str = "tenure."
    records: list[Published] = field(default_factory=list)

    async def publish(
        self,
        topic: Topic | str,
        key: str,
        value: BaseModel | dict[str, Any] | bytes,
        headers: Headers | None = None,
    ) -> None:
        name = topic_name(topic, self.prefix) if isinstance(topic, Topic) else topic
        self.records.append(Published(name, key, encode(value), list(headers or [])))

    async def publish_each(
        self, records: Sequence[OutgoingRecord], *, timeout_s: float
    ) -> list[PublishError | None]:
        for topic, key, value, headers in records:
            await self.publish(topic, key, value, headers)
        return [None] * len(records)

    async def ready(self, timeout_s: float) -> str | None:
        return None


class KafkaPublisher:
    """The real :class:`Publisher`: one idempotent aiokafka producer."""

    def __init__(self, settings: CommonSettings, *, client_id: str, **overrides: Any) -> None:
        self._prefix = settings.topic_prefix
        options: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap,
            "client_id": client_id,
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": 2,
            "request_timeout_ms": 15000,
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
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            return f"Kafka metadata request failed: {exc!r}"
        if not self._producer.client.cluster.brokers():
            return "no broker known"
        return None

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


@dataclass(frozen=True)
class Record:
    """A consumed record, free of aiokafka types."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @classmethod
    def from_consumer(cls, record: ConsumerRecord[bytes, bytes]) -> Record:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode() if record.key is not None else None,
            value=record.value or b"",
            headers=tuple(record.headers or ()),
            timestamp_ms=record.timestamp,
        )


def make_consumer(
    settings: CommonSettings, topics: Iterable[Topic | str], *, group_id: str, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer of ``topics`` in ``group_id`` that commits only when told to."""
    names = [topic_name(t, settings.topic_prefix) if isinstance(t, Topic) else t for t in topics]
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "metadata_max_age_ms": 5000,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*names, **options)


class DeadLetters:
    """Sends records that cannot be processed to ``<topic>.dlq`` with the error in headers."""

    def __init__(self, publisher: Publisher, *, consumer_name: str) -> None:
        self._publisher = publisher
        self._consumer = consumer_name

    async def send(self, record: Record, error: BaseException | str) -> None:
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        headers = [
            *record.headers,
            ("dlq.error", reason[:4000].encode()),
            ("dlq.consumer", self._consumer.encode()),
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
        ]
        await self._publisher.publish(
            dlq_name(record.topic), record.key or "", record.value, headers
        )
        log.warning(
            "record sent to dead-letter topic",
            extra={"topic": record.topic, "offset": record.offset, "error": reason[:500]},
        )


Handler = Callable[[Record], Awaitable[None]]

DECODE_ERRORS: tuple[type[BaseException], ...] = (
    InvalidRecord,
    ValidationError,
    orjson.JSONDecodeError,
    UnicodeDecodeError,
)


async def run_consumer(
    consumer: AIOKafkaConsumer,
    handle: Handler,
    dead_letters: DeadLetters,
    *,
    stop: asyncio.Event,
    max_attempts: int = 5,
    backoff_s: float = 0.2,
    max_records: int = 500,
) -> None:
    """Consume until ``stop`` is set: decode → handle → commit.

    A record whose handler raises one of :data:`DECODE_ERRORS` goes to the DLQ.
    Any other error is treated as transient and retried with exponential backoff
    up to ``max_attempts``; then it propagates (offsets stay uncommitted, so the
    record is processed again after a restart).
    """
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
        for records in batches.values():
            for raw in records:
                record = Record.from_consumer(raw)
                for attempt in range(1, max_attempts + 1):
                    try:
                        await handle(record)
                        break
                    except DECODE_ERRORS as exc:
                        await dead_letters.send(record, exc)
                        break
                    except Exception:
                        if attempt == max_attempts:
                            raise
                        log.exception("handler failed, retrying", extra={"attempt": attempt})
                        await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
        if batches:
            await consumer.commit()


async def ensure_topics(
    settings: CommonSettings,
    topics: Iterable[Topic] = tuple(Topic),
    *,
    replication_factor: int = 1,
    with_dlq: bool = True,
) -> None:
    """Create Tenure's topics (and their DLQs) if missing. Idempotent."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id="tenure-admin"
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted: list[NewTopic] = []
        for topic in topics:
            name = topic_name(topic, settings.topic_prefix)
            config = {"cleanup.policy": "compact"} if topic.compacted else {}
            names = [name, dlq_name(name)] if with_dlq else [name]
            for n in names:
                if n not in existing:
                    wanted.append(
                        NewTopic(
                            n,
                            num_partitions=settings.topic_partitions,
                            replication_factor=replication_factor,
                            topic_configs=config if n == name else {},
                        )
                    )
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()


async def broker_reachable(settings: CommonSettings, timeout_s: float = 3.0) -> bool:
    """Whether the cluster answers a metadata request within ``timeout_s``."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.list_topics(), timeout_s)
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
