"""The fenced producer: the one transactional writer of a single-writer role."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from common.kafka.publisher import offsets_after
from common.kafka.records import OutgoingRecord, PublishError, encode
from common.kafka.security import client_options
from common.settings import CommonSettings
from common.topics import Topic, topic_name


class FencedProducer:
    """The one transactional producer of a single-writer role (e.g. the outbox relay).

    All instances share ``transactional_id``: starting one fences every earlier one,
    the broker aborting the transaction it left open and refusing its later writes, so
    after :meth:`start` returns, what an earlier instance wrote is final (committed or
    aborted for good). :meth:`publish_batch` writes records all or nothing.
    """

    def __init__(
        self,
        settings: CommonSettings,
        *,
        client_id: str,
        transactional_id: str,
        transaction_timeout_ms: int = 30_000,
    ) -> None:
        self._options: dict[str, Any] = {
            **client_options(settings),
            "client_id": client_id,
            "transactional_id": transactional_id,
            "transaction_timeout_ms": transaction_timeout_ms,
            "acks": "all",
            "linger_ms": settings.producer_linger_ms,
            "request_timeout_ms": settings.producer_request_timeout_ms,
        }
        self._prefix = settings.topic_prefix
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Start and fence earlier instances. Raises ``PublishError`` if Kafka is unreachable."""
        producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise PublishError(f"transactional producer cannot start: {exc!r}") from exc
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._producer.stop()
            self._producer = None

    async def publish_batch(self, records: Sequence[OutgoingRecord]) -> dict[tuple[str, int], int]:
        """Write ``records`` in one transaction; per (topic, partition) the offset after them.

        Returns once committed. Raises ``PublishError`` when the transaction could not
        commit (then nothing of it is visible to ``read_committed`` readers, or it will
        be aborted when the next instance starts).
        """
        if self._producer is None:
            raise PublishError("producer not started")
        producer = self._producer
        try:
            async with producer.transaction():
                sent = [
                    await producer.send(
                        topic_name(topic, self._prefix) if isinstance(topic, Topic) else topic,
                        encode(value),
                        key=key.encode(),
                        headers=list(headers),
                    )
                    for topic, key, value, headers in records
                ]
                written = [await ack for ack in sent]
        except KafkaError as exc:
            raise PublishError(f"transaction failed: {exc!r}") from exc
        return offsets_after(written)
