"""What goes through Kafka, free of client-library types: records, values, errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from common.topics import Topic

Headers = Sequence[tuple[str, bytes]]

Partition = tuple[str, int]
"""(topic, partition): where a record is, and what a consumer is assigned."""

OutgoingRecord = tuple["Topic | str", str, "BaseModel | dict[str, Any] | bytes", Headers]
"""(topic, key, value, headers) of a record to publish."""


class PublishError(Exception):
    """The broker did not acknowledge a record (unreachable, timed out or refused)."""


class InvalidRecord(Exception):
    """A record that can never be processed: it goes to the dead-letter topic."""


class CommitFailed(Exception):
    """Offsets not committed: the group rebalanced and the partitions are not ours any
    more (their records are consumed again, by whoever has them now)."""


INVALID: tuple[type[BaseException], ...] = (
    InvalidRecord,
    ValidationError,
    orjson.JSONDecodeError,
    UnicodeDecodeError,
)
"""Errors that say a record is invalid (undecodable, or not what the topic carries):
a handler raising one of them sends the record to the dead-letter topic."""


def encode(value: BaseModel | dict[str, Any] | bytes) -> bytes:
    """Serialise a record value as JSON bytes (bytes are taken as they are)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    return orjson.dumps(value)


@dataclass(frozen=True)
class Record:
    """A consumed record."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @property
    def where(self) -> Partition:
        return (self.topic, self.partition)
