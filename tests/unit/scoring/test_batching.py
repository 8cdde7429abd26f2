"""The worker's batch path: events taken in batches, deliveries run eagerly.

Unit tests of the two adapters' logic; the integration tests run them against the broker
(``tests/integration/test_scoring.py``, SIGKILL restart included).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from scoring.adapters.batches import batches
from scoring.adapters.transport import Resumed, start_eagerly
from scoring.settings import ScoringSettings


@dataclass
class Message:
    offset: int
    topic: str = "t.events.login"
    generation_id: int = 1
    tracked: bool = False


@dataclass
class Event:
    message: Message


@dataclass
class FakeApp:
    consumer_generation_id: int = 1
    active: bool = True
    tracked: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.consumer = self
        self.flow_control = self
        self.topics = self
        self.acking_topics = {"t.events.login"}

    def is_active(self) -> bool:
        return self.active

    def track_message(self, message: Message) -> None:
        self.tracked.append(message.offset)


class FakeStream:
    """What ``batches`` uses of a faust stream: its first event comes from ``events()``,
    the rest wait in the channel's queue; the iterator acks the first when it resumes."""

    def __init__(self, app: FakeApp, firsts: list[Event], queued: list[Event]) -> None:
        self.app = app
        self.channel = self
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        for event in queued:
            self.queue.put_nowait(event)
        self._firsts = firsts
        self.acked: list[int] = []

    current_event: Event | None = None

    def _set_current_event(self, event: Event | None) -> None:
        self.current_event = event

    async def events(self) -> AsyncIterator[Event]:
        # as faust's (Cython) iterator: the event it acks is the stream's current event
        # when it resumes, even after the handler raised
        for event in self._firsts:
            self.current_event = event
            try:
                yield event
            finally:
                current, self.current_event = self.current_event, None
                if current is not None:
                    self.acked.append(current.message.offset)

    def handle(self, batch: list[Event]) -> None:
        """What the worker's handler does: each event becomes current in turn."""
        for event in batch:
            self._set_current_event(event)

    async def ack(self, event: Event) -> bool:
        self.acked.append(event.message.offset)
        return True


def events(*offsets: int, **fields: Any) -> list[Event]:
    return [Event(Message(offset=o, **fields)) for o in offsets]


async def test_a_batch_is_the_first_event_and_those_waiting_up_to_the_maximum() -> None:
    stream = FakeStream(FakeApp(), events(0, 4), events(1, 2, 3))
    seen: list[list[int]] = []
    acked_while_handled: list[list[int]] = []
    async for batch in batches(stream, max_events=3):  # type: ignore[arg-type]
        seen.append([e.message.offset for e in batch])
        acked_while_handled.append(sorted(stream.acked))
        stream.handle(batch)
    assert seen == [[0, 1, 2], [4, 3]]
    assert acked_while_handled == [[], [0, 1, 2]]  # a batch is acked after it was handled
    assert sorted(stream.acked) == [0, 1, 2, 3, 4]
    assert stream.app.tracked == [1, 2, 3]  # the queued ones are tracked as the iterator does


async def test_events_fetched_before_a_rebalance_are_acked_and_left_out() -> None:
    app = FakeApp(consumer_generation_id=2)
    queued = events(1, generation_id=1) + events(2, generation_id=2)
    stream = FakeStream(app, events(0, generation_id=2), queued)
    seen = [[e.message.offset for e in b] async for b in batches(stream, 10)]  # type: ignore[arg-type]
    assert seen == [[0, 2]]
    assert sorted(stream.acked) == [0, 1, 2]


async def test_the_queued_events_of_a_batch_are_not_acked_when_handling_it_raises() -> None:
    stream = FakeStream(FakeApp(), events(0), events(1, 2))
    with pytest.raises(RuntimeError):
        async for batch in batches(stream, 10):  # type: ignore[arg-type]
            stream.handle(batch)
            raise RuntimeError("handler failed")
    assert not {1, 2} & set(stream.acked)  # (the first is faust's iterator's to ack)


async def test_within_waits_once_for_more_when_nothing_is_waiting() -> None:
    stream = FakeStream(FakeApp(), events(0), [])
    late = events(1)[0]
    asyncio.get_running_loop().call_later(0.01, stream.queue.put_nowait, late)
    seen = [[e.message.offset for e in b] async for b in batches(stream, 10, within_s=0.2)]  # type: ignore[arg-type]
    assert seen == [[0, 1]]
    without = FakeStream(FakeApp(), events(0), [])
    asyncio.get_running_loop().call_later(0.01, without.queue.put_nowait, late)
    assert [len(b) async for b in batches(without, 10)] == [1]  # type: ignore[arg-type]


async def test_a_coroutine_that_does_not_suspend_finishes_in_the_eager_step() -> None:
    async def deliver() -> str:
        return "delivered"

    assert start_eagerly(deliver()) == (True, "delivered")


async def test_a_suspended_coroutine_resumes_where_it_stopped() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def deliver() -> int:
        steps.append("before")
        value = await gate
        steps.append("after")
        return value + 1

    done, rest = start_eagerly(deliver())
    assert not done and isinstance(rest, Resumed) and steps == ["before"]
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    gate.set_result(41)
    assert await task == 42 and steps == ["before", "after"]


async def test_cancelling_a_resumed_coroutine_cancels_it_inside() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cleaned: list[bool] = []

    async def deliver() -> None:
        try:
            await gate
        finally:
            cleaned.append(True)

    done, rest = start_eagerly(deliver())
    assert not done
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True] and gate.cancelled()


async def test_an_error_in_the_eager_step_propagates() -> None:
    async def deliver() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        start_eagerly(deliver())


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TENURE_SCORING_BATCH_MAX_EVENTS", "0"), ("TENURE_SCORING_BATCH_WITHIN_MS", "-1")],
)
def test_batch_settings_are_validated_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    field = variable.removeprefix("TENURE_SCORING_").lower()
    with pytest.raises(ValidationError, match=field):
        ScoringSettings()


def test_batches_are_on_by_default_and_never_wait() -> None:
    settings = ScoringSettings()
    assert settings.batch_max_events > 1 and settings.batch_within_ms == 0
