"""Ingest's use cases on fakes: a fake publisher, a fake clock, a rate limit on fake time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from common.clock import FakeClock
from common.events import EXAMPLES
from common.kafka import FakePublisher, OutgoingRecord, PublishError
from common.topics import Topic
from ingest import service
from ingest.adapters import BoundedPublisher, RealTimeRateLimit
from ingest.domain.admission import RateLimiter, Rejection
from ingest.errors import Invalid, RateLimited, TooLarge, Unavailable

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # EXAMPLES are stamped 2026-11-20T10:15Z
POLICY = service.Policy(
    max_future_skew=timedelta(minutes=5),
    max_event_age=timedelta(days=30),
    max_batch_events=4,
    publish_timeout_s=1.0,
)


class RefusingPublisher(FakePublisher):
    """Kafka refuses (does not acknowledge) the events whose id is in ``refused``."""

    def __init__(self, *refused: str) -> None:
        super().__init__()
        self.refused = set(refused)

    async def publish_each(
        self, records: list[OutgoingRecord], *, timeout_s: float
    ) -> list[PublishError | None]:
        out: list[PublishError | None] = []
        for record in records:
            if getattr(record[2], "event_id", None) in self.refused:
                out.append(PublishError("not acknowledged"))
            else:
                await self.publish(*record)
                out.append(None)
        return out


class Deps:
    """The use cases' keyword arguments, on fakes."""

    def __init__(self, publisher: FakePublisher | None = None, burst: float = 100) -> None:
        self.publisher = publisher or FakePublisher()
        self.clock = FakeClock(NOW)
        self.seconds = 0.0  # the rate limit's monotonic time
        self.limiter = RealTimeRateLimit(RateLimiter(1.0, burst), monotonic=lambda: self.seconds)

    def kwargs(self) -> dict[str, Any]:
        return {
            "key_id": "key-1",
            "publisher": self.publisher,
            "clock": self.clock,
            "limiter": self.limiter,
            "policy": POLICY,
        }


def body(value: Any) -> bytes:
    return orjson.dumps(value)


async def test_an_event_is_published_on_its_kinds_topic_stamped_by_the_clock() -> None:
    deps = Deps()
    accepted = await service.accept_event(body(EXAMPLES["login"]), **deps.kwargs())
    assert accepted == service.Accepted(EXAMPLES["login"]["event_id"])
    [record] = deps.publisher.records
    assert (record.topic, record.key) == ("tenure.events.login", "acme-42")
    assert orjson.loads(record.value)["event_id"] == EXAMPLES["login"]["event_id"]
    assert record.headers == [
        ("kind", b"login"),
        ("schema_version", b"1"),
        ("ingested_at", NOW.isoformat().encode()),
        ("api_key_id", b"key-1"),
    ]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b"{nope", Rejection("(body)", "json_invalid", "Invalid JSON: key must be a string")),
        (
            body({**EXAMPLES["support"], "score": 42}),
            Rejection("score", "less_than_equal", "Input should be less than or equal to 10"),
        ),
    ],
)
async def test_an_invalid_event_names_field_and_rule_and_publishes_nothing(
    value: bytes, error: Rejection
) -> None:
    deps = Deps()
    with pytest.raises(Invalid) as refused:
        await service.accept_event(value, **deps.kwargs())
    assert [(e.field, e.rule) for e in refused.value.errors] == [(error.field, error.rule)]
    assert deps.publisher.records == []


async def test_the_time_window_follows_the_clock() -> None:
    deps = Deps()
    event = {**EXAMPLES["usage"], "occurred_at": NOW.isoformat()}
    await service.accept_event(body(event), **deps.kwargs())
    deps.clock.advance(timedelta(days=31))
    with pytest.raises(Invalid) as refused:
        await service.accept_event(body(event), **deps.kwargs())
    assert [e.rule for e in refused.value.errors] == ["too_old"]
    assert len(deps.publisher.records) == 1


async def test_an_event_kafka_did_not_acknowledge_is_unavailable() -> None:
    deps = Deps(RefusingPublisher("e1"))
    events = [{**EXAMPLES["login"], "event_id": f"e{i}"} for i in range(3)]
    with pytest.raises(Unavailable):
        await service.accept_event(body(events[1]), **deps.kwargs())
    outcome = await service.accept_batch(body({"events": events}), **deps.kwargs())
    assert [r.status for r in outcome.results] == ["accepted", "unavailable", "accepted"]
    assert [orjson.loads(r.value)["event_id"] for r in deps.publisher.records] == ["e0", "e2"]


async def test_the_rate_limit_counts_events_and_says_when_to_retry() -> None:
    deps = Deps(burst=3)
    two = {"events": [{**EXAMPLES["login"], "event_id": f"r{i}"} for i in range(2)]}
    await service.accept_batch(body(two), **deps.kwargs())
    await service.accept_event(body(EXAMPLES["login"]), **deps.kwargs())
    with pytest.raises(RateLimited) as limited:
        await service.accept_event(body(EXAMPLES["login"]), **deps.kwargs())
    assert limited.value.retry_after_s == 1
    deps.seconds += 2.0  # two tokens back
    with pytest.raises(RateLimited) as limited:
        await service.accept_batch(body({"events": two["events"] * 2}), **deps.kwargs())
    assert limited.value.retry_after_s == 60  # four events never fit a bucket of three
    with pytest.raises(RateLimited) as limited:
        await service.accept_batch(body({"events": two["events"] + [{}]}), **deps.kwargs())
    assert limited.value.retry_after_s == 1  # invalid events count too
    assert len(deps.publisher.records) == 3


async def test_a_batch_answers_each_event_in_its_order() -> None:
    deps = Deps()
    events = [
        {**EXAMPLES["login"], "event_id": "b0"},
        {**EXAMPLES["support"], "event_id": "b1", "score": 99},
        {**EXAMPLES["intent"], "event_id": "b2", "occurred_at": "2026-01-01T00:00:00Z"},
        {"kind": "usage", "event_id": 7},
    ]
    outcome = await service.accept_batch(body({"events": events}), **deps.kwargs())
    assert [(r.index, r.event_id, r.status) for r in outcome.results] == [
        (0, "b0", "accepted"),
        (1, "b1", "rejected"),
        (2, "b2", "rejected"),
        (3, None, "rejected"),
    ]
    assert [e.rule for e in outcome.results[2].errors] == ["too_old"]
    assert outcome.counts == {"accepted": 1, "rejected": 3, "unavailable": 0}
    assert [r.topic for r in deps.publisher.records] == ["tenure.events.login"]


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (b"[", "json_invalid"),
        (body([EXAMPLES["login"]]), "batch_shape"),
        (body({"events": [], "more": 1}), "batch_shape"),
        (body({"events": []}), "too_short"),
    ],
)
async def test_a_body_that_is_no_batch_is_invalid_as_a_whole(value: bytes, rule: str) -> None:
    with pytest.raises(Invalid) as refused:
        await service.accept_batch(value, **Deps().kwargs())
    assert [e.rule for e in refused.value.errors] == [rule]


async def test_a_batch_over_the_limit_is_too_large() -> None:
    deps = Deps()
    with pytest.raises(TooLarge):
        await service.accept_batch(body({"events": [EXAMPLES["login"]] * 5}), **deps.kwargs())
    assert deps.publisher.records == []


class SlowPublisher(FakePublisher):
    """Holds every call until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def publish_each(
        self, records: list[OutgoingRecord], *, timeout_s: float
    ) -> list[PublishError | None]:
        await self.release.wait()
        return await super().publish_each(records, timeout_s=timeout_s)


async def test_the_bounded_publisher_refuses_beyond_its_events_in_flight() -> None:
    slow = SlowPublisher()
    bounded = BoundedPublisher(slow, max_inflight=3)
    record: OutgoingRecord = (Topic.EVENTS_LOGIN, "c", b"{}", [])
    held = asyncio.create_task(bounded.publish_each([record, record], timeout_s=1))
    await asyncio.sleep(0)
    assert bounded.inflight == 2 and await bounded.ready(1) is None
    refused = await bounded.publish_each([record, record], timeout_s=1)
    assert all(isinstance(e, PublishError) for e in refused)
    fits = asyncio.create_task(bounded.publish_each([record], timeout_s=1))
    await asyncio.sleep(0)
    assert await bounded.ready(1) == "producer buffer full"
    slow.release.set()
    assert await held == [None, None] and await fits == [None]
    assert bounded.inflight == 0 and len(slow.records) == 3
