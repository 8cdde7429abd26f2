"""Rules across playbooks: quiet hours (with daylight-saving changes), cap, consent, lanes,
holdout and variants. Pure functions, no clock but the values passed in."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from orchestrator.domain import rules as R
from orchestrator.domain.attribution import JourneySpan, in_window
from orchestrator.domain.playbook import Eligibility
from orchestrator.settings import OrchestratorSettings

RULES = OrchestratorSettings().rules()
MADRID = ZoneInfo("Europe/Madrid")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("local", "zone", "expected_local"),
    [
        # an ordinary day: 21:00 and later, and before 08:00, wait until 08:00 local
        (datetime(2026, 6, 10, 20, 59), MADRID, None),
        (datetime(2026, 6, 10, 21, 0), MADRID, datetime(2026, 6, 11, 8, 0)),
        (datetime(2026, 6, 10, 23, 59), MADRID, datetime(2026, 6, 11, 8, 0)),
        (datetime(2026, 6, 11, 0, 30), MADRID, datetime(2026, 6, 11, 8, 0)),
        (datetime(2026, 6, 11, 7, 59), MADRID, datetime(2026, 6, 11, 8, 0)),
        (datetime(2026, 6, 11, 8, 0), MADRID, None),
        # spring forward in Madrid (29 March 2026, 02:00 -> 03:00): the night is an hour shorter
        (datetime(2026, 3, 28, 22, 0), MADRID, datetime(2026, 3, 29, 8, 0)),
        # fall back in Madrid (25 October 2026, 03:00 -> 02:00): the night is an hour longer
        (datetime(2026, 10, 24, 23, 30), MADRID, datetime(2026, 10, 25, 8, 0)),
        # New York changes on other dates (8 March and 1 November 2026)
        (datetime(2026, 3, 7, 21, 30), NEW_YORK, datetime(2026, 3, 8, 8, 0)),
        (datetime(2026, 10, 31, 22, 0), NEW_YORK, datetime(2026, 11, 1, 8, 0)),
    ],
)
def test_quiet_hours_end_at_eight_local(
    local: datetime, zone: ZoneInfo, expected_local: datetime | None
) -> None:
    instant = local.replace(tzinfo=zone).astimezone(UTC)
    until = R.quiet_until(instant, zone.key, RULES)
    if expected_local is None:
        assert until is None
    else:
        assert until is not None
        assert until.astimezone(zone).replace(tzinfo=None) == expected_local


def test_daylight_saving_moves_the_utc_instant_not_the_local_hour() -> None:
    # Same local evening, two sides of the Madrid change: the wait differs by an hour.
    before = R.quiet_until(utc(2026, 3, 28, 21, 0), "Europe/Madrid", RULES)  # 22:00 CET
    assert before == utc(2026, 3, 29, 6, 0)  # 08:00 CEST is 06:00 UTC: 9 h later
    after = R.quiet_until(utc(2026, 10, 24, 21, 30), "Europe/Madrid", RULES)  # 23:30 CEST
    assert after == utc(2026, 10, 25, 7, 0)  # 08:00 CET is 07:00 UTC: 9.5 h later


def test_quiet_hours_use_the_default_zone_for_unknown_or_missing_zones() -> None:
    assert R.quiet_until(utc(2026, 6, 10, 22, 0), None, RULES) == utc(2026, 6, 11, 8, 0)
    assert R.quiet_until(utc(2026, 6, 10, 22, 0), "Mars/Olympus", RULES) == utc(2026, 6, 11, 8)
    tokyo = R.Rules(**{**RULES.__dict__, "default_time_zone": "Asia/Tokyo"})
    assert R.quiet_until(utc(2026, 6, 10, 13, 0), None, tokyo) == utc(2026, 6, 10, 23, 0)


def test_a_quiet_window_that_does_not_wrap_midnight() -> None:
    siesta = R.Rules(**{**RULES.__dict__, "quiet_start": time(14), "quiet_end": time(16)})
    assert R.quiet_until(utc(2026, 6, 10, 15, 0), "UTC", siesta) == utc(2026, 6, 10, 16, 0)
    assert R.quiet_until(utc(2026, 6, 10, 22, 0), "UTC", siesta) is None


def test_frequency_cap_three_per_seven_days() -> None:
    now = utc(2026, 6, 10, 12)
    days = [now - timedelta(days=d) for d in (6, 3, 1)]
    assert R.cap_free_at(days[1:], now, RULES) is None
    assert R.cap_free_at(days, now, RULES) == days[0] + timedelta(days=7)
    # exactly seven days old has left the window
    assert R.cap_free_at([now - timedelta(days=7), *days[1:]], now, RULES) is None
    # four in the window (two sent at once): wait for the second oldest
    four = [now - timedelta(days=d) for d in (6, 5, 3, 1)]
    assert R.cap_free_at(four, now, RULES) == four[1] + timedelta(days=7)
    assert R.cap_free_at([], now, RULES) is None


def test_consent_blocks_only_marketing_on_its_channel() -> None:
    c = R.Customer("c", email="a@b.example", consent_email=True)
    assert R.consent_block("email", True, c) is None
    assert R.consent_block("email", True, R.Customer("c", email="a@b.example")) == (
        "no email consent"
    )
    unsub = R.Customer("c", email="a@b.example", consent_email=True, unsubscribed=True)
    assert R.consent_block("email", True, unsub) == "unsubscribed"
    assert R.consent_block("email", False, unsub) is None  # transactional mail still goes
    assert R.consent_block("in_app", True, R.Customer("c", consent_in_app=False)) == (
        "no in-app consent"
    )
    assert R.consent_block("webhook", False, R.Customer("c")) is None


def test_eligibility() -> None:
    rule = Eligibility(plans=("basic",), consent=("email",), not_purchased=("course",))
    ok = R.Customer("c", email="a@b.example", plan="basic", consent_email=True)
    assert R.ineligible(rule, ok) is None
    assert "plan pro" in (R.ineligible(rule, R.Customer("c", plan="pro")) or "")
    bought = R.Customer("c", plan="basic", consent_email=True, products=frozenset({"course"}))
    assert R.ineligible(rule, bought) == "already purchased ['course']"
    unsub = R.Customer("c", plan="basic", consent_email=True, unsubscribed=True)
    assert R.ineligible(rule, unsub) == "no email consent"
    seg = Eligibility(segments=("high",))
    assert R.ineligible(seg, R.Customer("c", segment="low")) == "segment low not in ['high']"


def test_retention_before_expansion() -> None:
    assert R.retention_first("expansion", "high", [])
    assert R.retention_first("expansion", "low", ["retention"])
    assert not R.retention_first("expansion", "medium", ["lifecycle", "expansion"])
    assert not R.retention_first("retention", "high", ["retention"])
    assert not R.retention_first("lifecycle", "high", [])


def test_holdout_is_deterministic_and_near_its_share() -> None:
    ids = [f"cust-{i}" for i in range(20_000)]
    held = [R.in_holdout("win_back", c, 0.10) for c in ids]
    assert held == [R.in_holdout("win_back", c, 0.10) for c in ids]
    assert 0.09 < sum(held) / len(ids) < 0.11
    assert not any(R.in_holdout("win_back", c, 0.0) for c in ids[:1000])
    # independent per playbook: not the same customers held out everywhere
    other = [R.in_holdout("onboarding", c, 0.10) for c in ids]
    assert held != other


def test_variants_split_evenly_and_independently_of_the_holdout() -> None:
    ids = [f"cust-{i}" for i in range(9_000)]
    picks = Counter(R.pick_variant("p", ("a", "b", "c"), c) for c in ids)
    assert set(picks) == {"a", "b", "c"} and min(picks.values()) > 2_700
    control = [c for c in ids if R.in_holdout("p", c, 0.10)]
    in_control = Counter(R.pick_variant("p", ("a", "b", "c"), c) for c in control)
    assert min(in_control.values()) > len(control) / 3 * 0.8
    assert R.pick_variant("p", (), "c") is None


def test_attribution_window_after_the_last_step() -> None:
    journey = JourneySpan(
        "j", "p", started_at=utc(2026, 6, 1), ended_at=utc(2026, 6, 5), last_step_at=utc(2026, 6, 5)
    )
    window = timedelta(days=14)
    assert in_window(utc(2026, 6, 19), journey, window)
    assert not in_window(utc(2026, 6, 19, 0, 1), journey, window)
    assert not in_window(utc(2026, 5, 31), journey, window)


ZONES = ["Europe/Madrid", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]


@given(
    instant=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
    ),
    zone=st.sampled_from(ZONES),
)
@example(instant=datetime(2026, 10, 24, 19, 0, tzinfo=UTC), zone="Europe/Madrid")  # 12 h night
@example(instant=datetime(2026, 3, 28, 20, 0, tzinfo=UTC), zone="Europe/Madrid")  # 10 h night
@example(instant=datetime(2026, 4, 4, 10, 0, tzinfo=UTC), zone="Australia/Lord_Howe")
def test_quiet_hours_property(instant: datetime, zone: str) -> None:
    """Whatever the instant and zone (half-hour DST in Lord Howe included): a message due
    in quiet hours moves forward to 08:00 local, at most a night later; otherwise it stays."""
    until = R.quiet_until(instant, zone, RULES)
    local = instant.astimezone(ZoneInfo(zone)).time()
    in_quiet = local >= RULES.quiet_start or local < RULES.quiet_end
    assert (until is not None) == in_quiet
    if until is not None:
        # 11 hours of night, 12 on the night the clocks go back
        assert instant < until <= instant + timedelta(hours=12)
        assert until.astimezone(ZoneInfo(zone)).time() == RULES.quiet_end
        assert R.quiet_until(until, zone, RULES) is None
