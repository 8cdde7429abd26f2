"""The MRR ledger in memory (:class:`ports.MrrLedger`), the fake of ``adapters/mrr.py``."""

from __future__ import annotations

from datetime import datetime

from orchestrator.adapters.memory.tables import Tables
from orchestrator.domain.movements import Classified, Subscription, following


class MemoryMrrLedger:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

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

    async def record(self, classified: Classified) -> None:
        event_id = classified.state.event_id
        self.t.subscriptions[event_id] = classified.state
        if classified.movement is None:
            self.t.movements.pop(event_id, None)
        else:
            self.t.movements[event_id] = classified.movement
