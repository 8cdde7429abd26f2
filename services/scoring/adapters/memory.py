"""In-memory fakes of the scorer's ports, for unit tests of the worker's logic."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from scoring.domain.state import CustomerState
from scoring.ports import Incoming
from scoring.service import Emit


class MemoryStateStore:
    """:class:`scoring.ports.StateStore` in a dict (states kept as their JSON, as the table)."""

    def __init__(self) -> None:
        self.rows: dict[str, bytes] = {}

    def get(self, customer_id: str, origin: Incoming) -> CustomerState | None:
        raw = self.rows.get(customer_id)
        return CustomerState.from_dict(orjson.loads(raw)) if raw else None

    async def write(self, states: Mapping[str, tuple[Incoming, CustomerState]]) -> None:
        for customer_id, (_, state) in states.items():
            self.rows[customer_id] = orjson.dumps(state.to_dict())

    def delete(self, customer_id: str, origin: Incoming) -> None:
        self.rows.pop(customer_id, None)

    def scan(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, raw in list(self.rows.items()):
            yield key, orjson.loads(raw)


class MemoryRowStore:
    """:class:`scoring.ports.RowStore` in a dict."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def get(self, key: str, origin: Incoming) -> dict[str, Any] | None:
        return self.rows.get(key)

    def put(self, key: str, row: dict[str, Any], origin: Incoming) -> None:
        self.rows[key] = row


class ListSink:
    """:class:`scoring.ports.Sink` into a list."""

    def __init__(self) -> None:
        self.records: list[Emit] = []

    async def send(self, record: Emit) -> None:
        self.records.append(record)
        return None

    def values(self, topic: str) -> list[Any]:
        """The decoded JSON values sent to ``topic`` (tombstones left out), in order."""
        return [orjson.loads(r.value) for r in self.records if r.topic == topic and r.value]
