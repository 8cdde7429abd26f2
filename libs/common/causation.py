"""The causing event's ingest instant, carried from ingest to the notifier.

Ingest stamps every event record with the header ``ingested_at`` (the instant it accepted
the event, on the shared clock, ISO 8601). Each hop that reacts to that event at once
stamps what it makes with the same header: scoring its signal changes and score
snapshots, the orchestrator the outbox row of a notification sent as the immediate
reaction to the fact that started a journey (the rule: docs/decisions.md, "The business
latency"). The notifier reads it and observes the event-to-send latency. A record
without the header (an older one, or one made on a timer by design) is not observed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from common.clock import Clock

INGESTED_AT = "ingested_at"
"""The header's name, on ``events.*``, ``signals``, ``scores`` and ``notifications``."""

Headers = Iterable[tuple[str, bytes]] | Mapping[str, bytes]


def header(at: datetime) -> tuple[str, bytes]:
    """The ``ingested_at`` header of ``at`` (timezone-aware)."""
    if at.tzinfo is None:
        raise ValueError("ingested_at must be timezone-aware")
    return (INGESTED_AT, at.isoformat().encode())


def ingested_at(headers: Headers | None) -> datetime | None:
    """The ``ingested_at`` of a record's headers, or None when it has none or it does not
    parse as a timezone-aware ISO 8601 instant (a bad header loses the observation, never
    the record)."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if name != INGESTED_AT:
            continue
        try:
            text = value.decode() if isinstance(value, bytes) else str(value)
            at = datetime.fromisoformat(text)
        except (UnicodeDecodeError, ValueError):
            return None
        return at if at.tzinfo is not None else None
    return None


def elapsed_s(clock: Clock, since: datetime) -> float:
    """Real seconds from ``since`` (an instant of the shared clock) to now, never below 0
    (two hosts' clocks may differ by a little)."""
    return max(0.0, clock.real_seconds(clock.now() - since))
