"""Per-customer scoring state: bounded, JSON-serialisable, updated by pure functions."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def day_number(instant: datetime) -> int:
    """Days since 1970-01-01 (UTC) of ``instant``: the bucket an event is counted in."""
    return (instant - EPOCH).days


@dataclass
class CustomerState:
    """What the scorer remembers of one customer.

    Counters are daily buckets (day number → count) kept for the longest window,
    so memory is bounded however many events arrive; ``seen`` remembers the last
    event ids to drop duplicates.
    """

    customer_id: str
    seen: list[str] = field(default_factory=list)
    counters: dict[str, dict[int, int]] = field(default_factory=dict)
    latest: dict[str, tuple[str, float]] = field(default_factory=dict)
    overdue: dict[str, str] = field(default_factory=dict)  # invoice id → overdue since (ISO)
    as_of: str | None = None
    events_counted: int = 0
    active: dict[str, Any] = field(default_factory=dict)  # signal → value, last emitted
    tier: str = "low"
    last_snapshot: str | None = None  # fingerprint of the last emitted snapshot

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["counters"] = {k: {str(d): n for d, n in v.items()} for k, v in self.counters.items()}
        data["latest"] = {k: list(v) for k, v in self.latest.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CustomerState:
        data = dict(data)
        data["counters"] = {
            k: {int(d): int(n) for d, n in v.items()} for k, v in data.get("counters", {}).items()
        }
        data["latest"] = {k: (v[0], float(v[1])) for k, v in data.get("latest", {}).items()}
        return cls(**data)
