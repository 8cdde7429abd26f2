"""The scorer's ports: where states are kept and where records go.

Each has a real adapter (:mod:`scoring.adapters.faust_app`: a faust table, the app's
producer) and an in-memory fake (:mod:`scoring.adapters.memory`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from scoring.domain.state import CustomerState
from scoring.service import Emit


class Message(Protocol):
    """A consumed record (faust's ``Message`` has these attributes)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] | None


class Incoming(Protocol):
    """One consumed record as the adapter hands it to the worker (faust's ``Event``)."""

    @property
    def message(self) -> Message: ...


class StateStore(Protocol):
    """The customers' states, partitioned like their input.

    ``origin`` is the record being handled: a store partitioned like the input keeps
    the customer's state in that record's partition (and writes its changelog there).
    Reads and writes are synchronous and local; they never block on the network.
    """

    def get(self, customer_id: str, origin: Incoming) -> CustomerState | None:
        """The stored state of ``customer_id``, or None."""
        ...

    async def write(self, states: Mapping[str, tuple[Incoming, CustomerState]]) -> None:
        """Store a batch's last state of each customer (replacing any), each in the
        partition of its origin; durable once the producer has flushed."""
        ...

    def delete(self, customer_id: str, origin: Incoming) -> None:
        """Forget ``customer_id`` (a tombstone on the changelog); idempotent."""
        ...

    def scan(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every stored state of this worker's partitions, as ``(customer_id, state dict)``;
        may stop early (``RuntimeError``) if the store changes under it."""
        ...


class RowStore(Protocol):
    """Rows of JSON-ready dicts by key, partitioned like their input (the plan cohorts)."""

    def get(self, key: str, origin: Incoming) -> dict[str, Any] | None:
        """The row of ``key``, or None."""
        ...

    def put(self, key: str, row: dict[str, Any], origin: Incoming) -> None:
        """Store ``row`` for ``key`` (replacing any)."""
        ...


class Sink(Protocol):
    """Where the scorer's records go (Kafka in production, a list in tests)."""

    async def send(self, record: Emit) -> asyncio.Future[Any] | None:
        """Hand ``record`` to the producer (the one flushed before offsets are committed);
        blocks only while the producer's buffer is full; raises if it refuses it. Returns
        the future of the broker's acknowledgement, when there is one."""
        ...
