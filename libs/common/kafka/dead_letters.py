"""Dead letters: records a consumer could not process, kept on ``<topic>.dlq``, and
their replay once the cause is fixed.

A dead letter is the original record (key, value, headers) on the dead-letter topic of
the topic it came from, with five headers added: ``dlq.error``, ``dlq.consumer``,
``dlq.topic``, ``dlq.partition`` and ``dlq.offset`` (:func:`dead_letter_headers`, the
one place that writes them). :class:`DeadLetters` sends them for the consumer runner and
the notifier; scoring writes the same headers through its faust producer.

:func:`replay_dead_letters` puts them back (``tenure dlq replay``): each record goes to
the topic and partition it came from with its original key, value and headers (the
``dlq.*`` ones removed, ``replayed_from`` added), and the consumer group
:data:`REPLAY_GROUP` remembers how far each dead-letter partition was replayed, so a
second replay sends only what was dead-lettered since. Replaying is safe because every
consumer's handler is idempotent (a notification id already sent is not sent again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from common import causation
from common.kafka.admin import read_topic, reader
from common.kafka.publisher import Publisher
from common.kafka.records import Headers, InvalidRecord, PublishError, Record
from common.kafka.security import client_options
from common.settings import CommonSettings
from common.topics import dlq_name

log = logging.getLogger(__name__)

DLQ_HEADER_PREFIX = "dlq."
REPLAYED_FROM = "replayed_from"
"""Header of a replayed record: ``<dead-letter topic>:<partition>:<offset>`` it came from."""

REPLAY_GROUP = "tenure-dlq-replay"
"""The consumer group whose committed offsets say how far each dead-letter partition
was replayed (it never has members: the replay assigns partitions itself)."""


def dead_letter_headers(
    headers: Headers,
    *,
    error: BaseException | str,
    consumer: str,
    topic: str,
    partition: int,
    offset: int,
) -> list[tuple[str, bytes]]:
    """``headers`` and the five ``dlq.*`` headers of a record of ``topic`` at
    ``partition``/``offset`` that ``consumer`` could not process (the error's first
    4,000 characters)."""
    reason = _reason(error)
    return [
        *headers,
        ("dlq.error", reason[:4000].encode()),
        ("dlq.consumer", consumer.encode()),
        ("dlq.topic", topic.encode()),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(offset).encode()),
    ]


def _reason(error: BaseException | str) -> str:
    return error if isinstance(error, str) else f"{type(error).__name__}: {error}"


class DeadLetters:
    """Sends records that cannot be processed to ``<topic>.dlq`` with the error
    (:func:`dead_letter_headers`). ``on_sent``, if given, is called with the record's
    topic once it is on its dead-letter topic (a service counts them)."""

    def __init__(
        self,
        publisher: Publisher,
        *,
        consumer_name: str,
        on_sent: Callable[[str], None] | None = None,
    ) -> None:
        self._publisher = publisher
        self._consumer = consumer_name
        self._on_sent = on_sent

    async def send(self, record: Record, error: BaseException | str) -> None:
        """Publish ``record`` on its dead-letter topic; raises ``PublishError``."""
        headers = dead_letter_headers(
            record.headers,
            error=error,
            consumer=self._consumer,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        await self._publisher.publish(
            dlq_name(record.topic), record.key or "", record.value, headers
        )
        if self._on_sent is not None:
            self._on_sent(record.topic)
        log.warning(
            "record sent to dead-letter topic",
            extra={"topic": record.topic, "offset": record.offset, "error": _reason(error)[:500]},
        )


@dataclass(frozen=True)
class DeadLetter:
    """A record read back from a dead-letter topic, with what its headers say."""

    record: Record
    """As it is on the dead-letter topic."""
    topic: str
    """The topic it was consumed from (where a replay sends it)."""
    partition: int | None
    """Its partition there (None for a record a service gave up on after consuming it,
    such as a notification the notifier stopped retrying: its key then decides)."""
    offset: int | None
    consumer: str
    error: str

    @classmethod
    def parse(cls, record: Record) -> DeadLetter:
        """Read the ``dlq.*`` headers; :class:`InvalidRecord` names a missing or bad one."""
        found = {k: v for k, v in record.headers if k.startswith(DLQ_HEADER_PREFIX)}
        try:
            partition, offset = int(found["dlq.partition"]), int(found["dlq.offset"])
            return cls(
                record=record,
                topic=found["dlq.topic"].decode(),
                partition=partition if partition >= 0 else None,
                offset=offset if offset >= 0 else None,
                consumer=found.get("dlq.consumer", b"").decode(errors="replace"),
                error=found.get("dlq.error", b"").decode(errors="replace"),
            )
        except KeyError as missing:
            raise InvalidRecord(f"{where(record)} has no {missing} header") from None
        except ValueError as exc:
            raise InvalidRecord(f"{where(record)}: bad dlq header: {exc}") from None

    @property
    def replay_headers(self) -> list[tuple[str, bytes]]:
        """The original headers, and where the replayed record came from. Not the
        ``dlq.*`` ones, nor ``ingested_at``: a replay is not the business's reaction to
        the event, and its age would count in the latency objective."""
        dropped = (DLQ_HEADER_PREFIX, causation.INGESTED_AT)
        return [
            *((k, v) for k, v in self.record.headers if not k.startswith(dropped)),
            (REPLAYED_FROM, where(self.record).encode()),
        ]


def where(record: Record) -> str:
    return f"{record.topic}:{record.partition}:{record.offset}"


@dataclass(frozen=True)
class DeadLetterTopic:
    """What a dead-letter topic holds (from its beginning, or only what was not replayed
    yet), and for each partition the offset up to which a replay has sent it back."""

    name: str
    letters: Sequence[DeadLetter]
    unreadable: Sequence[Record]
    """Records without the ``dlq.*`` headers (put there by hand): never replayed."""
    replayed_up_to: dict[int, int]

    def replayed(self, letter: DeadLetter) -> bool:
        record = letter.record
        return record.offset < self.replayed_up_to.get(record.partition, 0)

    @property
    def waiting(self) -> list[DeadLetter]:
        """The dead letters not replayed yet, each partition's in offset order."""
        return [letter for letter in self.letters if not self.replayed(letter)]


class NoSuchTopic(Exception):
    """The dead-letter topic does not exist (nothing was ever dead-lettered there, or
    the name is wrong)."""


async def read_dead_letters(
    settings: CommonSettings, topic: str, *, waiting_only: bool = False, timeout_s: float = 60.0
) -> DeadLetterTopic:
    """The records on ``topic``'s dead-letter topic (``topic`` itself if it ends in
    ``.dlq``): all, or with ``waiting_only`` those not replayed yet. Raises
    :class:`NoSuchTopic`, and :class:`TimeoutError` naming the topic when its end is not
    reached within ``timeout_s``."""
    name = topic if topic.endswith(".dlq") else dlq_name(topic)
    async with reader(settings, name, group_id=REPLAY_GROUP) as (consumer, partitions):
        if not partitions:
            raise NoSuchTopic(f"no topic {name!r}")
        replayed = {tp.partition: await consumer.committed(tp) or 0 for tp in partitions}
    try:
        records, _ = await read_topic(
            settings, name, replayed if waiting_only else None, timeout_s=timeout_s
        )
    except TimeoutError:
        raise TimeoutError(f"{name}: its end not reached within {timeout_s:g} s") from None
    letters, unreadable = [], []
    for record in records:
        try:
            letters.append(DeadLetter.parse(record))
        except InvalidRecord:
            unreadable.append(record)
    return DeadLetterTopic(name, letters, unreadable, replayed)


@dataclass(frozen=True)
class ReplayReport:
    topic: str
    replayed: Sequence[DeadLetter]
    left: int
    """Dead letters not replayed yet (beyond the limit)."""


async def replay_dead_letters(
    settings: CommonSettings,
    topic: str,
    *,
    limit: int | None = None,
    timeout_s: float = 60.0,
) -> ReplayReport:
    """Send the dead letters of ``topic`` not replayed yet (at most ``limit``, each
    partition's oldest first) back to the topic and partition each came from (its key
    decides where the partition is not known), recording after each one, once the broker
    acknowledged it (``acks=all``), how far its partition was replayed: a replay stopped
    half-way sends the rest next time, and at most the record it stopped on again.
    Two replays of one topic must not run at once (nothing stops them; both would send).

    Raises :class:`InvalidRecord` naming a record without the ``dlq.*`` headers among
    those to replay (nothing is sent), and :class:`PublishError` when a record is refused.
    """
    found = await read_dead_letters(settings, topic, waiting_only=True, timeout_s=timeout_s)
    if found.unreadable:
        first = found.unreadable[0]
        raise InvalidRecord(
            f"{where(first)} has no dlq.* headers and cannot be replayed; "
            f"{len(found.unreadable)} such record(s) (tenure dlq list {topic})"
        )
    waiting = found.waiting
    chosen = waiting if limit is None else waiting[:limit]
    sent: list[DeadLetter] = []
    if chosen:
        producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
        await producer.start()
        try:
            async with reader(settings, found.name, group_id=REPLAY_GROUP) as (progress, _):
                for letter in chosen:
                    await _send(producer, letter)
                    record = letter.record
                    await progress.commit(
                        {TopicPartition(found.name, record.partition): record.offset + 1}
                    )
                    sent.append(letter)
        finally:
            await producer.stop()
    return ReplayReport(found.name, sent, len(waiting) - len(sent))


async def _send(producer: AIOKafkaProducer, letter: DeadLetter) -> None:
    record = letter.record
    try:
        await producer.send_and_wait(
            letter.topic,
            record.value,
            key=None if record.key is None else record.key.encode(),
            partition=letter.partition,
            headers=letter.replay_headers,
        )
    except KafkaError as exc:
        raise PublishError(f"replay to {letter.topic} failed: {exc!r}") from exc
