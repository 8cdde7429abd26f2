"""The shared clock.

Rules and timers never call ``datetime.now()``: they get a :class:`Clock`.
:class:`ScaledClock` runs ``scale`` times faster than real time from a shared
epoch, so every process of a deployment that shares the epoch agrees on "now"
(with ``scale=1440`` a simulated day passes in a real minute).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A source of the current instant (timezone-aware, UTC)."""

    def now(self) -> datetime:
        """Return the current instant. Never blocks."""
        ...

    def real_seconds(self, simulated: timedelta) -> float:
        """How many real seconds a simulated duration lasts (for sleeping and polling)."""
        ...


@dataclass(frozen=True)
class ScaledClock:
    """Real time, sped up by ``scale`` from ``epoch`` (``scale=1`` is the system clock)."""

    scale: float = 1.0
    epoch: datetime = field(default_factory=lambda: datetime.now(UTC))

    def now(self) -> datetime:
        real = time.time()
        start = self.epoch.timestamp()
        return datetime.fromtimestamp(start + (real - start) * self.scale, UTC)

    def real_seconds(self, simulated: timedelta) -> float:
        return simulated.total_seconds() / self.scale


class FakeClock:
    """A clock that moves only when told to; for unit tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def set(self, instant: datetime) -> None:
        self._now = instant

    def real_seconds(self, simulated: timedelta) -> float:
        return 0.0


def clock_from_settings(scale: float, epoch: datetime | None) -> ScaledClock:
    """The clock a process uses: scaled, sharing the deployment's epoch when one is set."""
    if epoch is None:
        return ScaledClock(scale=scale)
    return ScaledClock(scale=scale, epoch=epoch)
