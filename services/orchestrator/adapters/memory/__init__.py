"""The in-memory journey store: a fake of :class:`ports.Stores` beside the PostgreSQL one.

It keeps the same tables as plain Python rows and answers every method of the port as
the SQL adapter does (the same orderings, the group write as of one snapshot), so that
the use cases run on it unchanged: the fake-clock timeline tests and the hypothesis
state-machine test run the production decisions on it, and an integration test runs
the same scenarios on both stores and compares the journey histories.

What it does not model: concurrency (one caller at a time, so locks are no-ops) and
rollback (a use case that raises after writing keeps what it wrote; the use cases
check before they write). A lease lasts one claim: the next :meth:`MemoryStores.claim`
may take a timer the previous one left leased.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from orchestrator.adapters.memory.attribution import MemoryAttributions, MemoryPauses
from orchestrator.adapters.memory.customers import MemoryCustomers
from orchestrator.adapters.memory.journeys import MemoryJourneys
from orchestrator.adapters.memory.mrr import MemoryMrrLedger
from orchestrator.adapters.memory.steps import MemorySteps
from orchestrator.adapters.memory.tables import PENDING, Tables
from orchestrator.adapters.memory.triggers import MemoryTriggers
from orchestrator.domain.journey import State
from orchestrator.service_layer.ports import Claimed, Lease

__all__ = ["MemoryJourneyStore", "MemoryStores", "Tables"]


class MemoryJourneyStore:
    def __init__(self, tables: Tables) -> None:
        self.customers = MemoryCustomers(tables)
        self.journeys = MemoryJourneys(tables)
        self.steps = MemorySteps(tables)
        self.triggers = MemoryTriggers(tables)
        self.pauses = MemoryPauses(tables)
        self.attributions = MemoryAttributions(tables)
        self.mrr = MemoryMrrLedger(tables)


class MemoryStores:
    """The fake's entry: :meth:`begin` and :meth:`claim` as the port says; ``tables`` for
    a test to read, and :meth:`next_due` for a driver of the fake clock."""

    def __init__(self, tables: Tables | None = None) -> None:
        self.tables = tables or Tables()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[MemoryJourneyStore]:
        yield MemoryJourneyStore(self.tables)

    async def claim(self, lease: Lease, now: datetime, limit: int) -> list[Claimed]:
        t = self.tables
        t.claims += 1
        due = [
            timer
            for timer in t.timers.values()
            if timer.status == PENDING
            and timer.due_at is not None
            and timer.due_at <= now
            and t.journeys[timer.journey_id].state is State.ACTIVE
            and (timer.lease_owner is None or timer.lease_round < t.claims)
        ]
        due.sort(key=lambda timer: (timer.due_at, timer.id))
        claimed = []
        for timer in due[:limit]:
            timer.lease_owner, timer.lease_round = lease.owner, t.claims
            timer.attempts += 1
            assert timer.due_at is not None
            claimed.append(
                Claimed(timer.id, t.journeys[timer.journey_id].customer_id, timer.due_at)
            )
        return claimed

    def next_due(self) -> datetime | None:
        """The earliest due time of a pending step of an active journey or of a pending
        trigger (None: nothing is pending with a due time)."""
        t = self.tables
        steps = [
            timer.due_at
            for timer in t.timers.values()
            if timer.status == PENDING
            and timer.due_at is not None
            and t.journeys[timer.journey_id].state is State.ACTIVE
        ]
        triggers = [x.due_at for x in t.triggers.values() if x.status == PENDING and x.due_at]
        return min([*steps, *triggers], default=None)
