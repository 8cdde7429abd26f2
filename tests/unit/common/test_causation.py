"""The ``ingested_at`` header: written by ingest, read by every hop after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from common import causation
from common.clock import ScaledClock

AT = datetime(2026, 3, 2, 10, 0, 0, 123456, tzinfo=UTC)


def test_the_header_round_trips_to_the_microsecond() -> None:
    name, value = causation.header(AT)
    assert name == "ingested_at"
    assert causation.ingested_at([("kind", b"usage"), (name, value)]) == AT
    assert causation.ingested_at({name: value}) == AT  # faust may hand a mapping


def test_a_naive_instant_is_refused_when_written() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        causation.header(datetime(2026, 3, 2, 10, 0))


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [("kind", b"usage")],
        [("ingested_at", b"yesterday")],
        [("ingested_at", b"\xff\xfe")],
        [("ingested_at", b"2026-03-02T10:00:00")],  # no offset: not an instant
    ],
)
def test_a_missing_or_bad_header_is_no_instant(headers: object) -> None:
    assert causation.ingested_at(headers) is None  # type: ignore[arg-type]


def test_elapsed_is_real_seconds_on_a_scaled_clock() -> None:
    clock = ScaledClock(scale=1440.0)
    simulated = clock.now() - timedelta(seconds=2 * 1440)  # two real seconds ago, scaled
    assert 1.99 < causation.elapsed_s(clock, simulated) < 2.5
    assert causation.elapsed_s(clock, clock.now() + timedelta(hours=1)) == 0.0
