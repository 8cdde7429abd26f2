"""What the operator API computes from the read views: signals, journeys with their
history, and a playbook's results by arm and variant."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from orchestrator.adapters import operator as views
from orchestrator.domain import attribution as A
from orchestrator.domain.playbook import Playbook
from orchestrator.entrypoints.api.models import Arm, Journey, Money, Signal, Transition


def signals(snapshot: dict[str, Any]) -> list[Signal]:
    found = [Signal(kind="churn", **s) for s in snapshot.get("signals", ())]
    found += [Signal(kind="expansion", **s) for s in snapshot.get("expansion_signals", ())]
    return found


def journey_out(row: dict[str, Any]) -> Journey:
    return Journey(
        **{k: v for k, v in row.items() if k != "history"},
        history=[Transition(**t) for t in row.get("history", [])],
    )


def conversion_reasons(playbook: Playbook, loss_reasons: tuple[str, ...]) -> list[str]:
    """The exit reasons of ``playbook`` (exits and wait steps) that are not a loss."""
    reasons = {exit_.reason for exit_ in playbook.exits}
    for step in playbook.steps:
        wait_reason = getattr(getattr(step, "wait", None), "reason", None)
        if isinstance(wait_reason, str):
            reasons.add(wait_reason)
    return sorted(reasons - set(loss_reasons))


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


def tallies(
    playbook: Playbook, found: views.Results
) -> tuple[dict[str, A.Tally], dict[str, A.Tally]]:
    """The results by arm, and the treatment arm's by variant."""
    customer_steps = {s.id for s in playbook.steps if s.channel != "webhook"}
    by_arm: dict[str, A.Tally] = {}
    by_variant: dict[str, A.Tally] = {}

    def add(into: dict[str, A.Tally], key: str, more: A.Tally) -> None:
        old = into.get(key, A.Tally())
        into[key] = A.Tally(
            journeys=old.journeys + more.journeys,
            converted=old.converted + more.converted,
            revenue=A.add_money(old.revenue, more.revenue),
            messages=old.messages + more.messages,
        )

    for group in found.groups:
        revenue = {
            cur: total
            for (arm, variant, cur), (total, _) in found.revenue.items()
            if (arm, variant) == (group.arm, group.variant)
        }
        messages = sum(
            n
            for (arm, variant, step), n in found.sent.items()
            if (arm, variant) == (group.arm, group.variant) and step in customer_steps
        )
        tally = A.Tally(group.journeys, group.converted, revenue, messages)
        add(by_arm, group.arm, tally)
        if group.arm == "treatment" and group.variant is not None:
            add(by_variant, group.variant, tally)
    return by_arm, by_variant
