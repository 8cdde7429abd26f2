"""Past months of subscriptions for the simulator, so that the portfolio shows something.

The simulator posts these payment events at start-up, with their past timestamps
(fast-forwarded: all at once), before it simulates the present: the MRR record, the
business dashboard, ``tenure report`` and ``GET /v1/customers`` then have several months
of movements within minutes of ``make run``.

Pure: the events are drawn from the accounts, the rates (:class:`HistoryRates`, from
``SimulatorSettings``) and a seeded :class:`random.Random` only, so that a seed gives the
same history, event ids included (posting it again after a restart adds nothing: the
record is idempotent on the event id).

The shape: ``existing_share`` of the accounts subscribed in the month before the history
(so that its first month starts with MRR); the others start in one of its ``months``
months, evenly drawn. Each month, a live subscription cancels (at its profile's rate),
upgrades to the next plan or downgrades to the previous one, at most one of these; a
cancelled one comes back at its old plan at ``reactivate``. Months are calendar months
in UTC; the history's last month is the one before ``now``'s.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Account:
    """A simulated customer: its id, behaviour profile and plan at the history's start."""

    customer_id: str
    profile: str
    plan: str


@dataclass(frozen=True)
class HistoryRates:
    """How many months, and the monthly rates of each change (probabilities per live or,
    for ``reactivate``, cancelled subscription and month)."""

    months: int
    existing_share: float
    upgrade: float
    downgrade: float
    cancel: Mapping[str, float]  # by profile
    reactivate: float
    plan_mrr: Mapping[str, float]  # plans from the lowest to the highest
    currency: str


@dataclass
class History:
    """The events in time order, and where each account ended."""

    events: list[dict[str, Any]] = field(default_factory=list)
    plans: dict[str, str] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)

    def months(self) -> list[str]:
        """The months (YYYY-MM) in which events fall, in order."""
        return sorted({event["occurred_at"][:7] for event in self.events})


def month_starts(now: datetime, months: int) -> list[datetime]:
    """The starts of the ``months`` calendar months before ``now``'s, oldest first, and of
    ``now``'s month last (the history's end)."""
    year, month = now.astimezone(UTC).year, now.astimezone(UTC).month
    starts = []
    for back in range(months, -1, -1):
        y, m = divmod(year * 12 + month - 1 - back, 12)
        starts.append(datetime(y, m + 1, 1, tzinfo=UTC))
    return starts


def span(rates: HistoryRates) -> timedelta:
    """How far back the oldest event may be (the month before the history included): what
    ingest's ``max_event_age`` must allow; 0 without a history."""
    if rates.months <= 0:
        return timedelta(0)
    return timedelta(days=31 * (rates.months + 2))


def generate(
    accounts: Sequence[Account], *, now: datetime, rates: HistoryRates, rng: random.Random
) -> History:
    """The history of ``accounts`` over the ``rates.months`` months before ``now``'s."""
    plans = list(rates.plan_mrr)
    if rates.months <= 0 or not accounts:
        return History(plans={a.customer_id: a.plan for a in accounts})
    unknown = {a.plan for a in accounts} - set(plans)
    if unknown:
        raise ValueError(f"plans without an MRR in plan_mrr: {sorted(unknown)}")
    starts = month_starts(now, rates.months)
    before = month_starts(starts[0], 1)[0]  # the month before the history
    history = History()

    def at(month: int) -> datetime:
        """A random instant of month ``month`` (-1: the one before the history)."""
        first = before if month < 0 else starts[month]
        last = starts[0] if month < 0 else starts[month + 1]
        return first + (last - first) * rng.random()

    def event(account: Account, type_: str, when: datetime, **fields: Any) -> None:
        history.events.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "customer_id": account.customer_id,
                "occurred_at": when.isoformat(),
                "kind": "payment",
                "type": type_,
                "currency": rates.currency,
                **fields,
            }
        )

    start_month = {
        a.customer_id: -1 if rng.random() < rates.existing_share else rng.randrange(rates.months)
        for a in accounts
    }
    plan = {a.customer_id: a.plan for a in accounts}
    live: dict[str, bool] = {}
    for month in range(-1, rates.months):
        for account in accounts:
            cid = account.customer_id
            if start_month[cid] == month:
                mrr = rates.plan_mrr[plan[cid]]
                event(account, "subscription_started", at(month), plan=plan[cid], mrr_after=mrr)
                live[cid] = True
                continue
            if month < 0 or cid not in live:
                continue
            draw = rng.random()
            if not live[cid]:
                if draw < rates.reactivate:
                    mrr = rates.plan_mrr[plan[cid]]
                    event(
                        account,
                        "subscription_reactivated",
                        at(month),
                        plan=plan[cid],
                        mrr_after=mrr,
                    )
                    live[cid] = True
                continue
            cancel = rates.cancel.get(account.profile, 0.0)
            index = plans.index(plan[cid])
            if draw < cancel:
                event(account, "subscription_cancelled", at(month), plan=plan[cid])
                live[cid] = False
            elif draw < cancel + rates.upgrade and index + 1 < len(plans):
                new = plans[index + 1]
                mrr = rates.plan_mrr[new]
                event(account, "subscription_upgraded", at(month), plan=new, mrr_after=mrr)
                plan[cid] = new
            elif draw < cancel + rates.upgrade + rates.downgrade and index > 0:
                new = plans[index - 1]
                mrr = rates.plan_mrr[new]
                event(account, "subscription_downgraded", at(month), plan=new, mrr_after=mrr)
                plan[cid] = new
    history.events.sort(key=lambda e: (e["occurred_at"], e["event_id"]))
    history.plans = plan
    history.cancelled = {cid for cid, on in live.items() if not on}
    return history
