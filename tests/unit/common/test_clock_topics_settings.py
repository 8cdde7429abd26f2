from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from common.clock import FakeClock, ScaledClock
from common.settings import CommonSettings
from common.topics import Topic, dlq_name, events_topic, topic_name


def test_scaled_clock_runs_faster_from_its_epoch() -> None:
    epoch = datetime.now(UTC) - timedelta(seconds=10)
    clock = ScaledClock(scale=1440, epoch=epoch)
    elapsed = clock.now() - epoch
    assert timedelta(seconds=10 * 1440) <= elapsed < timedelta(seconds=11 * 1440)
    assert clock.real_seconds(timedelta(days=1)) == 60


def test_two_processes_sharing_an_epoch_agree() -> None:
    epoch = datetime.now(UTC) - timedelta(seconds=5)
    a, b = ScaledClock(scale=8640, epoch=epoch), ScaledClock(scale=8640, epoch=epoch)
    assert abs((a.now() - b.now()).total_seconds()) < 8640 * 0.05


def test_system_clock_is_scale_one() -> None:
    before = datetime.now(UTC)
    now = ScaledClock().now()
    assert abs((now - before).total_seconds()) < 1


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    assert clock.now() == clock.now()
    clock.advance(timedelta(days=3))
    assert clock.now() == datetime(2026, 1, 4, tzinfo=UTC)


def test_topic_names_have_the_prefix_and_dlqs() -> None:
    assert topic_name(Topic.SCORES, "acme.") == "acme.scores"
    assert dlq_name("acme.events.usage") == "acme.events.usage.dlq"
    assert events_topic("payment") is Topic.EVENTS_PAYMENT
    assert [t.value for t in Topic.events()] == [
        "events.usage",
        "events.payment",
        "events.login",
        "events.support",
        "events.profile",
        "events.intent",
    ]
    assert [t for t in Topic if t.compacted] == [Topic.SCORES]


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENURE_KAFKA_BOOTSTRAP", "broker:19092")
    monkeypatch.setenv("TENURE_TIME_SCALE", "1440")
    settings = CommonSettings()
    assert settings.kafka_bootstrap == "broker:19092"
    assert settings.time_scale == 1440


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENURE_TIME_SCALE", "-3")
    with pytest.raises(ValidationError) as caught:
        CommonSettings()
    assert "time_scale" in str(caught.value)
