"""Held triggers in memory (:class:`ports.Triggers`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from orchestrator.adapters.memory.tables import PENDING, Tables, TriggerRow
from orchestrator.service_layer.ports import HeldTrigger


class MemoryTriggers:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    def _pending(self, customer_id: str) -> list[TriggerRow]:
        return [
            x
            for x in self.t.triggers.values()
            if x.customer_id == customer_id and x.status == PENDING
        ]

    def _one(self, customer_id: str, playbook: str) -> TriggerRow | None:
        return next((x for x in self._pending(customer_id) if x.playbook == playbook), None)

    def _add(self, row: TriggerRow) -> None:
        self.t.triggers[row.id] = row

    async def arm(
        self, *, customer_id: str, playbook: str, signal: str, now: datetime, due_at: datetime
    ) -> bool:
        if self._one(customer_id, playbook) is not None:
            return False
        self._add(TriggerRow(self.t.next_id(), customer_id, playbook, signal, now, due_at))
        return True

    async def block(
        self,
        *,
        customer_id: str,
        playbook: str,
        signal: str,
        why: str,
        now: datetime,
        replace: bool,
    ) -> None:
        found = self._one(customer_id, playbook)
        if found is None:
            row = TriggerRow(self.t.next_id(), customer_id, playbook, signal, now, None)
            row.blocked_by = why
            self._add(row)
        elif replace:
            found.signal, found.blocked_by, found.due_at = signal, why, None

    async def suspend(self, customer_id: str, playbooks: Iterable[str], *, why: str) -> int:
        names = set(playbooks)
        found = [x for x in self._pending(customer_id) if x.playbook in names]
        for row in found:
            row.blocked_by, row.due_at = why, None
        return len(found)

    async def blocked(self, customer_id: str, why: str) -> list[str]:
        return [x.playbook for x in self._pending(customer_id) if x.blocked_by == why]

    async def lift(self, customer_id: str, why: str, due: Mapping[str, datetime]) -> int:
        found = [x for x in self._pending(customer_id) if x.blocked_by == why and x.playbook in due]
        for row in found:
            row.blocked_by, row.due_at = None, due[row.playbook]
        return len(found)

    async def disarm(self, customer_id: str, playbook: str, signal: str) -> int:
        found = [
            x for x in self._pending(customer_id) if x.playbook == playbook and x.signal == signal
        ]
        for row in found:
            row.status = "cancelled"
        return len(found)

    async def claim_due(self, now: datetime, limit: int) -> list[HeldTrigger]:
        due = [
            x
            for x in self.t.triggers.values()
            if x.status == PENDING and x.due_at is not None and x.due_at <= now
        ]
        due.sort(key=lambda x: (x.due_at, x.id))
        return [HeldTrigger(x.id, x.customer_id, x.playbook, x.signal) for x in due[:limit]]

    async def mark_fired(self, trigger_id: int) -> None:
        self.t.triggers[trigger_id].status = "fired"
