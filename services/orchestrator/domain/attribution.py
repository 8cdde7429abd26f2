"""Attribution of conversions and their revenue to journeys (docs/domain.md sections 6-7).

"Each playbook has a goal and an attribution window (default 14 days after the last
step); conversions and revenue are attributed to it." A payment event that meets a
playbook's goal (its ``conversion`` block) is attributed to that playbook's journey of
the customer that was running when it happened, or whose window after its last step
was still open; with the revenue the playbook's rule reads off the event. Each
playbook is judged on its own (as a campaign is in Braze or Customer.io): one upgrade
may count for two upsell playbooks whose windows overlap, so revenue summed across
playbooks can count a payment twice, never within one.

Control-arm journeys are attributed exactly like treatment journeys: that is what the
holdout comparison measures. Pure functions over plain values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from orchestrator.domain.playbook import Conversion, Playbook, Revenue

CENT = Decimal("0.01")
ZERO = Decimal("0.00")


def cents(value: Decimal) -> Decimal:
    """``value`` rounded to the cent, halves away from zero (49.505 -> 49.51, -0.125 ->
    -0.13): the one rule for money (docs/domain.md section 6), PostgreSQL's
    ``round(numeric, 2)``, so that the dashboard's views and the API agree to the cent."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Payment:
    """A payment event as attribution sees it (``common.events.PaymentEvent``)."""

    event_id: str
    type: str
    at: datetime
    plan: str | None = None
    product: str | None = None
    amount: float | None = None
    currency: str | None = None
    mrr_before: float | None = None
    mrr_after: float | None = None


@dataclass(frozen=True)
class JourneySpan:
    """What attribution needs of one journey: when it ran and when its last step happened."""

    journey_id: str
    playbook: str
    started_at: datetime
    ended_at: datetime | None = None
    last_step_at: datetime | None = None  # the latest step sent or skipped, if any
    arm: str = "treatment"
    variant: str | None = None


@dataclass(frozen=True)
class Attribution:
    """``payment`` counts for ``journey_id`` with ``revenue`` in ``currency``."""

    event_id: str
    journey_id: str
    playbook: str
    arm: str
    variant: str | None
    event_type: str
    revenue: Decimal
    currency: str
    converted_at: datetime


def meets_goal(conversion: Conversion, payment: Payment) -> bool:
    """Whether ``payment`` is a conversion of the goal described by ``conversion``."""
    if payment.type not in conversion.types:
        return False
    if conversion.plans and payment.plan not in conversion.plans:
        return False
    return not (conversion.products and payment.product not in conversion.products)


def _money(value: float | None) -> Decimal | None:
    if value is None:
        return None
    return cents(Decimal(str(value)))


def revenue_of(rule: Revenue, payment: Payment) -> Decimal:
    """The revenue ``payment`` brings under ``rule``, never negative (0 when unknown).

    ``mrr_delta`` is the MRR gained (``mrr_after - mrr_before``), falling back to the
    event's ``amount`` when either MRR field is missing; ``mrr_after`` falls back to
    ``amount`` too.
    """
    amount = _money(payment.amount)
    before, after = _money(payment.mrr_before), _money(payment.mrr_after)
    value: Decimal | None
    if rule == "none":
        value = ZERO
    elif rule == "amount":
        value = amount
    elif rule == "mrr_delta":
        value = after - before if after is not None and before is not None else amount
    else:  # mrr_after
        value = after if after is not None else amount
    return max(value or ZERO, ZERO)


def window_end(journey: JourneySpan, window: timedelta) -> datetime | None:
    """Until when a conversion counts for ``journey``: None while it is live (open);
    else the attribution window after its last step (its start when it had none), or
    its end when that is later (a conversion while it ran always counts)."""
    if journey.ended_at is None:
        return None
    after_last = (journey.last_step_at or journey.started_at) + window
    return max(after_last, journey.ended_at)


def in_window(at: datetime, journey: JourneySpan, window: timedelta) -> bool:
    """Whether a conversion at ``at`` is attributed to ``journey``."""
    if at < journey.started_at:
        return False
    end = window_end(journey, window)
    return end is None or at <= end


def attribute(
    payment: Payment,
    journeys: Iterable[JourneySpan],
    playbooks: Mapping[str, Playbook],
    *,
    default_currency: str,
) -> list[Attribution]:
    """The attributions of ``payment`` among the customer's ``journeys``.

    For each playbook with a ``conversion`` block that ``payment`` meets, the journey of
    that playbook started most recently among those whose window holds ``payment.at``
    (at most one per playbook). Ordered by playbook name. Idempotence is the caller's:
    recording must be keyed on (event id, playbook).
    """
    best: dict[str, JourneySpan] = {}
    for journey in journeys:
        playbook = playbooks.get(journey.playbook)
        if playbook is None or playbook.conversion is None:
            continue
        if not meets_goal(playbook.conversion, payment):
            continue
        if not in_window(payment.at, journey, playbook.attribution_window):
            continue
        current = best.get(playbook.name)
        if current is None or (journey.started_at, journey.journey_id) > (
            current.started_at,
            current.journey_id,
        ):
            best[playbook.name] = journey
    found = []
    for name in sorted(best):
        journey = best[name]
        conversion = playbooks[name].conversion
        assert conversion is not None
        found.append(
            Attribution(
                event_id=payment.event_id,
                journey_id=journey.journey_id,
                playbook=name,
                arm=journey.arm,
                variant=journey.variant,
                event_type=payment.type,
                revenue=revenue_of(conversion.revenue, payment),
                currency=payment.currency or default_currency,
                converted_at=payment.at,
            )
        )
    return found


# --- reporting: conversion and revenue per arm, variant and message ----------------------


Money = dict[str, Decimal]


@dataclass(frozen=True)
class Tally:
    """Journeys of one group (an arm, or a variant of the treatment arm) and their results."""

    journeys: int = 0
    converted: int = 0
    revenue: Money = field(default_factory=dict)  # by currency
    messages: int = 0  # customer messages sent (email, in-app), not CSM tasks


def rate(tally: Tally) -> float | None:
    """Conversion rate; None while there is no journey."""
    return tally.converted / tally.journeys if tally.journeys else None


def per(revenue: Money, count: int) -> Money | None:
    """Revenue per item (journey, message), by currency; None when ``count`` is 0."""
    if count <= 0:
        return None
    return {c: cents(v / count) for c, v in revenue.items()}


@dataclass(frozen=True)
class Holdout:
    """Treatment against control.

    ``uplift``: conversion rate difference (absolute); ``relative_uplift``: uplift /
    control rate; ``revenue_per_journey_uplift``: revenue per treatment journey minus
    revenue per control journey, by currency; ``incremental_revenue``: that difference
    times the treatment journeys (the revenue the messages added). None while an arm
    has no journey (or, for the relative uplift, while control converted nobody).
    """

    uplift: float | None
    relative_uplift: float | None
    revenue_per_journey_uplift: Money | None
    incremental_revenue: Money | None


def compare(treatment: Tally, control: Tally) -> Holdout:
    t, c = rate(treatment), rate(control)
    uplift = t - c if t is not None and c is not None else None
    relative = uplift / c if uplift is not None and c else None
    if not treatment.journeys or not control.journeys:
        return Holdout(uplift, relative, None, None)
    # Exact per-journey figures for the difference, rounded once at the end.
    currencies = sorted(set(treatment.revenue) | set(control.revenue))
    diff = {
        cur: treatment.revenue.get(cur, ZERO) / treatment.journeys
        - control.revenue.get(cur, ZERO) / control.journeys
        for cur in currencies
    }
    return Holdout(
        uplift,
        relative,
        {cur: cents(d) for cur, d in diff.items()},
        {cur: cents(d * treatment.journeys) for cur, d in diff.items()},
    )


def add_money(total: Money, more: Mapping[str, Decimal]) -> Money:
    """``total`` plus ``more``, by currency (a new dict)."""
    out = dict(total)
    for cur, value in more.items():
        out[cur] = out.get(cur, ZERO) + value
    return out
