"""The MRR ledger in memory (:class:`ports.MrrLedger`), the fake of ``adapters/mrr.py``."""

from __future__ import annotations

from datetime import datetime

from orchestrator.adapters.memory.tables import Tables
from orchestrator.domain.attribution import Payment
from orchestrator.domain.movements import (
    Classified,
    Movement,
    StateChange,
    Subscription,
    following,
)


class MemoryMrrLedger:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def lock(self, customer_id: str) -> None:
        """One caller at a time: nothing to hold."""

    async def log(self, customer_id: str, payment: Payment) -> None:
        self.t.subscription_log.setdefault(payment.event_id, (customer_id, payment))

    async def logged_from(self, customer_id: str, at: datetime, event_id: str) -> list[Payment]:
        found = [
            p
            for c, p in self.t.subscription_log.values()
            if c == customer_id and (p.at, p.event_id) >= (at, event_id)
        ]
        return sorted(found, key=lambda p: (p.at, p.event_id))

    async def before(self, customer_id: str, at: datetime, event_id: str) -> Subscription | None:
        earlier = [
            s
            for s in self.t.subscriptions.values()
            if s.customer_id == customer_id and (s.at, s.event_id) < (at, event_id)
        ]
        if not earlier:
            return None
        latest = max(earlier, key=lambda s: (s.at, s.event_id))
        return following(Classified(None, latest))

    async def forget_from(self, customer_id: str, at: datetime, event_id: str) -> None:
        def later(row: StateChange | Movement) -> bool:
            return row.customer_id == customer_id and (row.at, row.event_id) >= (at, event_id)

        for key in [k for k, row in self.t.subscriptions.items() if later(row)]:
            del self.t.subscriptions[key]
        for key in [k for k, row in self.t.movements.items() if later(row)]:
            del self.t.movements[key]

    async def record(self, classified: Classified) -> None:
        event_id = classified.state.event_id
        self.t.subscriptions[event_id] = classified.state
        if classified.movement is None:
            self.t.movements.pop(event_id, None)
        else:
            self.t.movements[event_id] = classified.movement
