"""A playbook's results by arm and variant, from what the read views counted: what the
operator API's playbook results and the portfolio's playbooks (``GET /v1/metrics/portfolio``,
``tenure report``) are computed from."""

from __future__ import annotations

from orchestrator.adapters import operator as views
from orchestrator.domain import attribution as A
from orchestrator.domain.playbook import Playbook


def conversion_reasons(playbook: Playbook, loss_reasons: tuple[str, ...]) -> list[str]:
    """The exit reasons of ``playbook`` (exits and wait steps) that are not a loss."""
    reasons = {exit_.reason for exit_ in playbook.exits}
    for step in playbook.steps:
        wait_reason = getattr(getattr(step, "wait", None), "reason", None)
        if isinstance(wait_reason, str):
            reasons.add(wait_reason)
    return sorted(reasons - set(loss_reasons))


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
