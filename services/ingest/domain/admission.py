"""Whether an event or a request is admitted, decided from plain values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Rejection:
    """Why one event is refused: the field path, the rule it broke, a sentence."""

    field: str
    rule: str
    message: str


def check_occurred_at(
    occurred_at: datetime, *, now: datetime, max_future: timedelta, max_age: timedelta
) -> Rejection | None:
    """Event time must lie in [now - max_age, now + max_future] (clock skew allowed ahead)."""
    if occurred_at > now + max_future:
        return Rejection(
            "occurred_at",
            "too_far_in_future",
            f"occurred_at is more than {max_future.total_seconds():.0f} s ahead of the "
            f"server clock ({now.isoformat()})",
        )
    if occurred_at < now - max_age:
        return Rejection(
            "occurred_at",
            "too_old",
            f"occurred_at is older than {max_age.days} days (server clock {now.isoformat()})",
        )
    return None


@dataclass
class TokenBucket:
    """``rate`` tokens a second, up to ``burst``; one token per event.

    ``take`` is given the current monotonic time, so the rule is testable without sleeping.
    """

    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def take(self, n: int, now: float) -> float:
        """Take ``n`` tokens. Returns 0 if admitted, else the seconds until ``n`` are there."""
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if n <= self.tokens:
            self.tokens -= n
            return 0.0
        if n > self.burst:
            return float("inf")
        return (n - self.tokens) / self.rate


def retry_after_s(wait: float, *, never: float = 60) -> int:
    """Whole seconds a client is told to wait for ``wait`` seconds (at least 1); ``never``
    when no wait is enough (more events at once than the bucket holds)."""
    if wait == float("inf"):
        return int(never)
    return max(1, math.ceil(wait))


@dataclass
class RateLimiter:
    """One token bucket per API key id."""

    rate: float
    burst: float
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def take(self, key_id: str, n: int, now: float) -> float:
        """:meth:`TokenBucket.take` on ``key_id``'s bucket (made full on first use)."""
        bucket = self.buckets.get(key_id)
        if bucket is None:
            bucket = self.buckets[key_id] = TokenBucket(self.rate, self.burst)
        return bucket.take(n, now)
