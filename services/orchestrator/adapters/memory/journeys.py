"""Journeys in memory (:class:`ports.Journeys`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from orchestrator.adapters.memory.tables import JourneyRow, Tables, TimerRow
from orchestrator.domain import rules as R
from orchestrator.domain.errors import JourneyNotFound
from orchestrator.domain.journey import Change, Journey, State


class MemoryJourneys:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    def new_id(self, playbook: str) -> str:
        return f"{playbook}-{len(self.t.journeys) + 1}"

    async def start(
        self, journey: Journey, change: Change, schedule: Sequence[tuple[str, datetime | None]]
    ) -> bool:
        t = self.t
        if any(
            j.playbook == journey.playbook and j.ended_at is None
            for j in t.customer_journeys(journey.customer_id)
        ):
            return False
        t.journeys[journey.journey_id] = JourneyRow(
            journey.journey_id,
            journey.customer_id,
            journey.playbook,
            journey.state,
            journey.started_at,
            journey.arm,
            journey.variant,
            ingested_at=journey.ingested_at,
        )
        t.history.append(change)
        for step, due in schedule:
            timer_id = t.next_id()
            t.timers[timer_id] = TimerRow(timer_id, journey.journey_id, step, due)
        return True

    def _row(self, journey_id: str) -> JourneyRow:
        row = self.t.journeys.get(journey_id)
        if row is None:
            raise JourneyNotFound(f"journey {journey_id} not found")
        return row

    async def get(self, journey_id: str) -> Journey:
        return self._row(journey_id).journey()

    async def live(self, customer_id: str, *, lock: bool = True) -> list[Journey]:
        rows = [j for j in self.t.customer_journeys(customer_id) if j.ended_at is None]
        return [j.journey() for j in sorted(rows, key=lambda j: j.started_at)]

    async def of_playbook(self, playbook: str, state: State, *, paused_by: str | None) -> list[str]:
        return [
            j.journey_id
            for j in self.t.journeys.values()
            if j.playbook == playbook
            and j.state is state
            and (paused_by is None or j.paused_by == paused_by)
        ]

    async def last_ended_at(self, customer_id: str, playbook: str) -> datetime | None:
        ends = [
            j.ended_at
            for j in self.t.customer_journeys(customer_id)
            if j.playbook == playbook and j.ended_at is not None
        ]
        return max(ends, default=None)

    async def save(self, journey: Journey, change: Change) -> None:
        self.t.history.append(change)
        row = self._row(journey.journey_id)
        row.state, row.paused_by = journey.state, journey.paused_by
        row.ingested_at = journey.ingested_at

    async def end(self, journey: Journey, change: Change, reason: str) -> bool:
        self.t.history.append(change)
        row = self._row(journey.journey_id)
        row.state, row.ended_at, row.exit_reason, row.paused_by = (
            journey.state,
            change.at,
            reason,
            None,
        )
        waited = False
        for timer in self.t.pending_timers(journey.journey_id):
            timer.status = "cancelled"
            waited = waited or timer.waiting_since is not None
        return waited

    async def add_seen(self, journey_id: str, name: str) -> None:
        row = self._row(journey_id)
        if name not in row.seen:
            row.seen.append(name)

    async def note_outcome(self, journey_id: str, step: str, status: str, at: datetime) -> bool:
        message = self.t.messages.get((journey_id, step))
        if message is None:
            return False
        outcome = R.outcome_after(message.outcome, status)
        if outcome == message.outcome:
            return False
        message.outcome, message.outcome_at = outcome, at
        message.counts_at = (
            R.counts_at(message.decided_at, outcome, at) if message.marketing else None
        )
        return message.marketing and outcome in R.NOT_SENT

    async def wake_waiting(self, customer_id: str, now: datetime) -> int:
        woken = waiting_later(self.t, customer_id, now)
        for timer in woken:
            timer.due_at = now
        return len(woken)


def waiting_later(tables: Tables, customer_id: str, now: datetime) -> list[TimerRow]:
    """The customer's steps of active journeys deferred for a cap slot and due after now."""
    return [
        timer
        for journey in tables.customer_journeys(customer_id)
        if journey.state is State.ACTIVE
        for timer in tables.pending_timers(journey.journey_id)
        if timer.waiting_since is not None and timer.due_at is not None and timer.due_at > now
    ]
