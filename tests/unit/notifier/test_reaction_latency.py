"""The notifier's event-to-send latency: observed once, when a notification that carries
the ingest instant of the event it reacts to is sent (at once or on a retry); never
otherwise."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from prometheus_client import REGISTRY

from common.clock import FakeClock
from common.messages import Channel, Notification
from notifier.errors import SendError
from notifier.service_layer import delivery
from tests.unit.notifier.test_delivery import START, World, notification, raw

NAME = "tenure_notifier_event_to_send_seconds"


class RealSecondsClock(FakeClock):
    """A fake clock whose simulated seconds are real ones (scale 1)."""

    def real_seconds(self, simulated: timedelta) -> float:
        return simulated.total_seconds()


def world(**over: object) -> World:
    w = World(**over)
    w.clock = RealSecondsClock(START)
    object.__setattr__(w, "deps", replace(w.deps, clock=w.clock))
    return w


def observed(n: Notification) -> tuple[float, float]:
    labels = {"playbook": n.playbook, "channel": n.channel}
    count = REGISTRY.get_sample_value(f"{NAME}_count", labels) or 0.0
    total = REGISTRY.get_sample_value(f"{NAME}_sum", labels) or 0.0
    return count, total


async def test_each_channel_observes_the_seconds_since_ingest_once() -> None:
    channels: tuple[Channel, ...] = ("email", "webhook", "in_app")
    for channel in channels:
        w = world()
        n = notification(channel)
        before = observed(n)
        ingested = START - timedelta(seconds=4.5)
        await delivery.receive(raw(n), deps=w.deps, ingested_at=ingested)
        await delivery.receive(raw(n), deps=w.deps, ingested_at=ingested)  # a replay
        count, total = observed(n)
        assert (count - before[0], round(total - before[1], 6)) == (1, 4.5), channel


async def test_a_notification_without_the_instant_is_not_observed() -> None:
    w = world()
    n = notification()
    before = observed(n)
    await delivery.receive(raw(n), deps=w.deps)
    assert len(w.mailer.sent) == 1
    assert observed(n) == before


async def test_a_retry_is_observed_once_it_is_sent_and_the_failed_attempt_is_not() -> None:
    w = world()
    w.mailer.failures.append(SendError("421 try later"))
    n = notification()
    before = observed(n)
    await delivery.receive(raw(n), deps=w.deps, ingested_at=START - timedelta(seconds=1))
    assert observed(n) == before  # failed: nothing sent
    w.clock.advance(timedelta(hours=1))
    await delivery.retry_due(deps=w.deps)
    assert len(w.mailer.sent) == 1  # sent on the retry, an hour and a second after ingest
    count, total = observed(n)
    assert (count - before[0], round(total - before[1], 6)) == (1, 3601)


def test_an_instant_after_now_counts_as_zero() -> None:
    w = world()
    n = notification()
    before = observed(n)
    future: datetime = START + timedelta(seconds=2)
    delivery.observe_reaction(n, future, deps=w.deps)
    assert observed(n) == (before[0] + 1, before[1])
