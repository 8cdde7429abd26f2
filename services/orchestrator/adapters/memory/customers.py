"""Customers in memory (:class:`ports.Customers`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from orchestrator.adapters.memory.tables import _STATE_COLUMNS, Tables
from orchestrator.domain import rules as R
from orchestrator.domain.rules import customer_from


class MemoryCustomers:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def get(self, customer_id: str) -> R.Customer:
        score = self.t.scores.get(customer_id)
        return customer_from(
            customer_id,
            self.t.profiles.get(customer_id),
            self.t.states.get(customer_id),
            score["tier"] if score else None,
        )

    async def erased_since(self, customer_id: str) -> datetime | None:
        return self.t.erasures.get(customer_id)

    async def upsert_profile(self, row: Mapping[str, Any]) -> None:
        _newer(self.t.profiles, row, "profile_at")

    async def upsert_score(self, row: Mapping[str, Any]) -> None:
        _newer(self.t.scores, row, "as_of")

    def _state(self, customer_id: str) -> dict[str, Any]:
        return self.t.states.setdefault(customer_id, dict.fromkeys(_STATE_COLUMNS))

    async def note_unsubscribed(self, customer_id: str, at: datetime) -> None:
        self._state(customer_id)["unsubscribed_at"] = at

    async def note_segment(self, customer_id: str, segment: str | None) -> None:
        self._state(customer_id)["segment"] = segment

    async def note_loyalty_tier(self, customer_id: str, tier: str | None) -> None:
        self._state(customer_id)["loyalty_tier"] = tier

    async def note_plan(self, customer_id: str, plan: str, at: datetime) -> None:
        state = self._state(customer_id)
        if state["plan_at"] is None or state["plan_at"] <= at:
            state.update(plan=plan, plan_at=at)

    async def note_subscription(self, customer_id: str, state: str, at: datetime) -> None:
        row = self._state(customer_id)
        if row["subscription_at"] is None or row["subscription_at"] <= at:
            row.update(subscription=state, subscription_at=at)

    async def note_purchase(self, customer_id: str, product: str) -> None:
        state = self._state(customer_id)
        products = state["products"] or []
        if product not in products:
            state["products"] = [*products, product]


def _newer(table: dict[str, dict[str, Any]], row: Mapping[str, Any], at: str) -> None:
    """An upsert that never lets an older row overwrite a newer one."""
    old = table.get(row["customer_id"])
    if old is None:
        table[row["customer_id"]] = dict(row)
    elif old[at] is not None and old[at] <= row[at]:
        old.update(row)
