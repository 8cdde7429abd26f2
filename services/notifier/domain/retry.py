"""When to try a failed delivery again, and when to give up (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by a total age.

    Delay before attempt ``n + 1`` after ``n`` failed attempts:
    ``d = min(cap, base * 2**(n-1))``, of which a share ``jitter`` is random:
    ``d * (1 - jitter) + d * jitter * u`` with ``u`` uniform in [0, 1).
    """

    base: timedelta
    cap: timedelta
    jitter: float
    max_age: timedelta

    def __post_init__(self) -> None:
        if self.base <= timedelta(0) or self.cap < self.base:
            raise ValueError("retry policy: need 0 < base <= cap")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("retry policy: jitter must be within [0, 1]")

    def delay(self, failed_attempts: int, u: float) -> timedelta:
        """The wait after ``failed_attempts`` (>= 1) failures; ``u`` is a uniform draw in [0, 1)."""
        if failed_attempts < 1:
            raise ValueError("failed_attempts must be at least 1")
        if not 0.0 <= u < 1.0:
            raise ValueError("u must be within [0, 1)")
        exponent = min(failed_attempts - 1, 62)  # beyond that the cap has long applied
        full = min(self.cap.total_seconds(), self.base.total_seconds() * 2.0**exponent)
        return timedelta(seconds=full * (1.0 - self.jitter) + full * self.jitter * u)

    def next_attempt(
        self, *, first_attempt_at: datetime, now: datetime, failed_attempts: int, u: float
    ) -> datetime | None:
        """When to try again, or None when the next try would fall past ``max_age``."""
        due = now + self.delay(failed_attempts, u)
        if due - first_attempt_at > self.max_age:
            return None
        return due
