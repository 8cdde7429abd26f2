"""What the operator API computes from the read views: signals, journeys with their
history, arms as answered; a playbook's results by arm and variant are the service
layer's (``orchestrator.service_layer.results``)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from orchestrator.domain import attribution as A
from orchestrator.entrypoints.api.models import Arm, Journey, Money, Signal, Transition
from orchestrator.service_layer.results import conversion_reasons, tallies

__all__ = ["arm_out", "conversion_reasons", "journey_out", "money", "signals", "tallies"]


def signals(snapshot: dict[str, Any]) -> list[Signal]:
    found = [Signal(kind="churn", **s) for s in snapshot.get("signals", ())]
    found += [Signal(kind="expansion", **s) for s in snapshot.get("expansion_signals", ())]
    return found


def journey_out(row: dict[str, Any]) -> Journey:
    return Journey(
        **{k: v for k, v in row.items() if k != "history"},
        history=[Transition(**t) for t in row.get("history", [])],
    )


def money(value: Mapping[str, Decimal] | None) -> Money | None:
    return None if value is None else {cur: float(v) for cur, v in sorted(value.items())}


def arm_out(tally: A.Tally) -> Arm:
    return Arm(
        journeys=tally.journeys,
        converted=tally.converted,
        conversion_rate=A.rate(tally),
        revenue=money(tally.revenue) or {},
        revenue_per_journey=money(A.per(tally.revenue, tally.journeys)),
        messages_sent=tally.messages,
        revenue_per_message=money(A.per(tally.revenue, tally.messages)),
    )
