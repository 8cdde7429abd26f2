"""MRR movements and subscription states from payment events (docs/domain.md section 6.2).

Each payment event that changes a customer's recurring revenue or subscription is
classified against what was known of the customer's subscription just before it
(:class:`Subscription`): a :class:`Movement` of one :class:`Kind` with its amount (always
positive; the kind says the direction), and the :class:`State` the customer is in after
it. Pure: the caller reads the subscription before the event and records the result,
keyed on the event id, so the same event classified twice gives the same rows.

The rules:

- ``subscription_started``: **new** for a customer never seen (or seen with no
  subscription); **reactivation** for a cancelled one; for one already active, a plan
  change (below).
- ``subscription_reactivated`` (or an upgrade or downgrade of a cancelled subscription):
  **reactivation** for a cancelled customer, a plan change for an active one. The MRR
  is ``mrr_after``, else ``amount``, else the MRR the customer had when it cancelled.
- ``subscription_upgraded`` / ``subscription_downgraded`` (and the plan changes above):
  **expansion** when the MRR rises, **contraction** when it falls, no movement when it
  stays (the plan may still change). The MRR before is the customer's MRR as recorded,
  not the event's ``mrr_before``: the record's MRR at the end of a month must be its
  MRR at the start plus the month's movements. The MRR after is ``mrr_after``, else
  the MRR before plus (an upgrade) or minus (a downgrade) ``amount``, the change, as
  attribution reads it. A customer first seen with an upgrade or downgrade (its start
  is older than the record) is taken as active with the event's ``mrr_before``.
- ``subscription_cancelled``: **churn** of the recorded MRR (``amount`` for a customer
  the record has not seen); the MRR after is 0. A second cancellation changes nothing.
- every other payment type (invoices, purchases, a downgrade only requested) is no
  movement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from orchestrator.domain.attribution import ZERO, Payment, cents


class Kind(StrEnum):
    NEW = "new"
    EXPANSION = "expansion"
    CONTRACTION = "contraction"
    CHURN = "churn"
    REACTIVATION = "reactivation"


class State(StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"
    REACTIVATED = "reactivated"  # active again after a cancellation


LIVE = frozenset({State.ACTIVE, State.REACTIVATED})
STARTS = frozenset({"subscription_started", "subscription_reactivated"})
PLAN_CHANGES = frozenset({"subscription_upgraded", "subscription_downgraded"})
CHANGES_SUBSCRIPTION = STARTS | PLAN_CHANGES | {"subscription_cancelled"}
# The sign a movement of each kind adds to MRR.
SIGN = {
    Kind.NEW: 1,
    Kind.EXPANSION: 1,
    Kind.REACTIVATION: 1,
    Kind.CONTRACTION: -1,
    Kind.CHURN: -1,
}


@dataclass(frozen=True)
class Subscription:
    """A customer's subscription as recorded just before an event."""

    state: State
    mrr: Decimal
    plan: str | None
    currency: str
    mrr_when_cancelled: Decimal = ZERO  # what a reactivation restores when it names no MRR


@dataclass(frozen=True)
class Movement:
    event_id: str
    customer_id: str
    kind: Kind
    amount: Decimal  # > 0; SIGN[kind] gives the direction
    currency: str
    plan_before: str | None
    plan_after: str | None
    mrr_before: Decimal
    mrr_after: Decimal
    at: datetime
    event_type: str


@dataclass(frozen=True)
class StateChange:
    """The customer's subscription after the event (one per classified event)."""

    event_id: str
    customer_id: str
    state: State
    plan: str | None
    mrr: Decimal
    currency: str
    at: datetime
    mrr_when_cancelled: Decimal = ZERO


@dataclass(frozen=True)
class Classified:
    movement: Movement | None
    state: StateChange


def money(value: float | Decimal | None) -> Decimal | None:
    """``value`` to the cent (halves away from zero, ``attribution.cents``), None stays None."""
    if value is None:
        return None
    return cents(Decimal(str(value)))


def classify(
    customer_id: str,
    payment: Payment,
    before: Subscription | None,
    *,
    default_currency: str,
) -> Classified | None:
    """The movement and state ``payment`` makes of ``before``; None for an event that
    changes no subscription (an invoice, a purchase, a repeated cancellation)."""
    kind = payment.type
    if kind not in CHANGES_SUBSCRIPTION:
        return None
    currency = payment.currency or (before.currency if before else default_currency)
    live = before is not None and before.state in LIVE
    known = before.mrr if before is not None else ZERO
    # Before the record knows the customer, the event's own MRR before is all there is;
    # after, the record's MRR is the one the waterfall adds up from.
    unseen = before is None and kind in PLAN_CHANGES
    mrr_before = known if live else (money(payment.mrr_before) or ZERO if unseen else ZERO)
    plan_before = before.plan if before is not None else None
    plan_after = payment.plan or plan_before

    def result(
        movement: Kind | None, state: State, mrr_before: Decimal, mrr_after: Decimal
    ) -> Classified:
        moved = None
        if movement is not None and mrr_after != mrr_before:
            moved = Movement(
                event_id=payment.event_id,
                customer_id=customer_id,
                kind=movement,
                amount=abs(mrr_after - mrr_before),
                currency=currency,
                plan_before=plan_before,
                plan_after=plan_after,
                mrr_before=mrr_before,
                mrr_after=mrr_after,
                at=payment.at,
                event_type=kind,
            )
        remembered = before.mrr_when_cancelled if before is not None else ZERO
        change = StateChange(
            event_id=payment.event_id,
            customer_id=customer_id,
            state=state,
            plan=plan_after,
            mrr=mrr_after,
            currency=currency,
            at=payment.at,
            mrr_when_cancelled=mrr_before if state is State.CANCELLED else remembered,
        )
        return Classified(moved, change)

    if kind == "subscription_cancelled":
        if before is not None and before.state is State.CANCELLED:
            return None
        lost = mrr_before if live else (money(payment.amount) or ZERO)
        return result(Kind.CHURN, State.CANCELLED, lost, ZERO)
    if not live and not unseen:  # a start, or any change of a cancelled subscription
        restored = money(payment.mrr_after) or money(payment.amount)
        if before is None:
            return result(Kind.NEW, State.ACTIVE, ZERO, restored or ZERO)
        fallback = before.mrr_when_cancelled
        return result(Kind.REACTIVATION, State.REACTIVATED, ZERO, restored or fallback)
    # A plan change (or a start of a subscription already live).
    after = money(payment.mrr_after)
    if after is None:
        change = money(payment.amount) or ZERO
        if kind == "subscription_downgraded":
            change = -change
        elif kind in STARTS:
            change = ZERO
        after = max(mrr_before + change, ZERO)
    state = before.state if before is not None and live else State.ACTIVE
    grew = Kind.EXPANSION if after > mrr_before else Kind.CONTRACTION
    return result(grew, state, mrr_before, after)


def following(classified: Classified) -> Subscription:
    """The subscription after ``classified`` (to classify the customer's next event)."""
    c = classified.state
    return Subscription(c.state, c.mrr, c.plan, c.currency, c.mrr_when_cancelled)
