"""Plan cohorts (docs/domain.md section 6): who was a customer of each plan at a month's start,
who of them was lost in that month, their MRR at the start and the expansion MRR.

Two halves, both pure:

- per customer, :func:`register`, :func:`on_cancelled` and :func:`on_upgraded` turn what
  the scorer learns of one customer into :class:`CohortDelta` records (keyed by plan,
  repartitioned to the cohort agent by the app);
- per plan, :func:`fold_delta` sums the deltas into a small aggregate (one row per
  month, a bounded number of months) and :func:`pooled` gives the :class:`CohortStats`
  of the last complete months, which :func:`scoring.domain.value.cohort_rates` turns
  into the observed rates once there are enough customer-months.

A delta is additive (counts and amounts), so the aggregate is a plain sum and the
order in which deltas of different customers arrive does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.events import Event, PaymentEvent
from scoring.domain.model import Clv, ScoringModel
from scoring.domain.state import CustomerState
from scoring.domain.value import CohortStats

Month = str  # "YYYY-MM"
Aggregate = dict[Month, list[float]]  # month → [customers, lost, mrr at start, expansion mrr]


def month_of(instant: datetime) -> Month:
    """The UTC calendar month of ``instant`` ("2026-06")."""
    utc = instant.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


def month_start(month: Month) -> datetime:
    year, number = month.split("-")
    return datetime(int(year), int(number), 1, tzinfo=UTC)


def month_index(month: Month) -> int:
    """Months since year 0: consecutive months differ by one."""
    year, number = month.split("-")
    return int(year) * 12 + int(number) - 1


@dataclass(frozen=True)
class CohortDelta:
    """A change to one plan's row for one month (what the cohort agent sums)."""

    plan: str
    month: Month
    customers: int = 0  # +1: counted at the month's start; -1: that count withdrawn
    lost: int = 0  # +1: a customer counted at the start cancelled during the month
    mrr: float = 0.0  # MRR at the start, with the sign of ``customers``
    expansion: float = 0.0  # MRR added by upgrades during the month

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "month": self.month,
            "customers": self.customers,
            "lost": self.lost,
            "mrr": self.mrr,
            "expansion": self.expansion,
        }


# -- per customer ------------------------------------------------------------------------
#
# ``cohort`` is the customer's own record: month → [plan, MRR at start, lost (0/1)] of the
# months it was counted in, the newest ``model.cohort_months + 1`` only.


def register(
    cohort: dict[Month, list[Any]],
    *,
    plan: str | None,
    plan_at: str | None,
    mrr: float | None,
    cancelled_at: str | None,
    at: datetime,
    model: Clv,
) -> list[CohortDelta]:
    """Count the customer in its plan's cohort of ``at``'s month, once, if it belongs there.

    It belongs when its plan was known before the month began (a customer who arrived
    during the month is not "at its start") and it had not cancelled before the month
    began; a cancellation during the month that is already known is counted as lost at
    once (events of one customer on different topics arrive in any order). Called
    with the state as it was *before* the input that brought ``at``, so the plan and
    MRR are those at the month's start. Mutates ``cohort``.
    """
    month = month_of(at)
    if month in cohort or plan is None or plan_at is None:
        return []
    if cohort and month_index(month) <= month_index(max(cohort)) - model.cohort_months:
        return []  # older than the months remembered: it may have been counted already
    start = month_start(month).isoformat()
    if plan_at >= start or (cancelled_at is not None and cancelled_at < start):
        return []
    value = mrr or 0.0
    deltas = [CohortDelta(plan=plan, month=month, customers=1, mrr=value)]
    # a cancellation during this month already seen (it came first, from another topic)
    lost = cancelled_at is not None and month_of(datetime.fromisoformat(cancelled_at)) == month
    if lost:
        deltas.append(CohortDelta(plan=plan, month=month, lost=1))
    cohort[month] = [plan, value, int(lost)]
    for old in sorted(cohort)[: -(model.cohort_months + 1)]:
        del cohort[old]
    return deltas


def on_cancelled(cohort: dict[Month, list[Any]], at: datetime) -> list[CohortDelta]:
    """A cancellation at ``at``: lost from the cohort of that month (once), and withdrawn
    from the cohorts of later months it was counted in ahead of time (by the clock).
    Mutates ``cohort``."""
    month = month_of(at)
    deltas: list[CohortDelta] = []
    entry = cohort.get(month)
    if entry is not None and not entry[2]:
        entry[2] = 1
        deltas.append(CohortDelta(plan=entry[0], month=month, lost=1))
    for later in sorted(m for m in cohort if m > month):
        plan, value, lost = cohort.pop(later)
        deltas.append(
            CohortDelta(plan=plan, month=later, customers=-1, lost=-int(lost), mrr=-value)
        )
    return deltas


def on_upgraded(
    cohort: dict[Month, list[Any]], at: datetime, added_mrr: float
) -> list[CohortDelta]:
    """An upgrade adding ``added_mrr`` at ``at``: expansion of the cohort the customer was
    counted in that month (none if it was not counted: it arrived during the month)."""
    entry = cohort.get(month_of(at))
    if entry is None or added_mrr <= 0:
        return []
    return [CohortDelta(plan=entry[0], month=month_of(at), expansion=added_mrr)]


# -- per plan ----------------------------------------------------------------------------


def fold_delta(aggregate: Aggregate | None, delta: CohortDelta, model: Clv) -> Aggregate:
    """The plan's aggregate with ``delta`` added (a new dict; months beyond the kept
    ``cohort_months + 1`` newest are dropped, and a delta older than those is ignored)."""
    out = {m: list(row) for m, row in (aggregate or {}).items()}
    newest = max([delta.month, *out])
    if month_index(delta.month) < month_index(newest) - model.cohort_months:
        return out
    row = out.setdefault(delta.month, [0.0, 0.0, 0.0, 0.0])
    row[0] += delta.customers
    row[1] += delta.lost
    row[2] += delta.mrr
    row[3] += delta.expansion
    for old in sorted(out)[: -(model.cohort_months + 1)]:
        del out[old]
    return out


def pooled(aggregate: Aggregate | None, now: datetime, model: Clv) -> CohortStats | None:
    """The plan's counts summed over its last ``cohort_months`` complete months.

    A month is complete once ``now`` (the clock) or a delta of a later month is past it;
    the month in progress is left out (its losses are not all known yet). None when
    no complete month was observed.
    """
    if not aggregate:
        return None
    current = max(month_index(month_of(now)), *(month_index(m) for m in aggregate))
    complete = [
        row
        for month, row in aggregate.items()
        if current - model.cohort_months <= month_index(month) < current
    ]
    if not complete:
        return None
    return CohortStats(
        customers_at_start=int(sum(r[0] for r in complete)),
        customers_lost=int(sum(r[1] for r in complete)),
        mrr_at_start=round(sum(r[2] for r in complete), 2),
        expansion_mrr=round(sum(r[3] for r in complete), 2),
    )


def stats_to_dict(stats: CohortStats) -> dict[str, Any]:
    return {
        "customers_at_start": stats.customers_at_start,
        "customers_lost": stats.customers_lost,
        "mrr_at_start": stats.mrr_at_start,
        "expansion_mrr": stats.expansion_mrr,
    }


def stats_from_dict(data: dict[str, Any]) -> CohortStats:
    return CohortStats(
        customers_at_start=int(data["customers_at_start"]),
        customers_lost=int(data["customers_lost"]),
        mrr_at_start=float(data["mrr_at_start"]),
        expansion_mrr=float(data["expansion_mrr"]),
    )


# -- one customer's deltas -------------------------------------------------------------------


def register_customer(state: CustomerState, model: ScoringModel, at: datetime) -> list[CohortDelta]:
    """Count the customer in the cohort of the month of ``at`` if it is not counted yet
    (with the plan and MRR the state has); mutates ``state.cohort``."""
    return register(
        state.cohort,
        plan=state.plan,
        plan_at=state.plan_at,
        mrr=state.mrr,
        cancelled_at=state.cancelled_at,
        at=at,
        model=model.clv,
    )


def customer_deltas(state: CustomerState, event: Event, model: ScoringModel) -> list[CohortDelta]:
    """What ``event`` changes in the plan cohorts; call *before* folding it (the plan and
    MRR of the state are then those the customer had before the event). Mutates
    ``state.cohort``."""
    when = event.occurred_at
    deltas = register_customer(state, model, when)
    if isinstance(event, PaymentEvent):
        if event.type == "subscription_cancelled":
            deltas += on_cancelled(state.cohort, when)
        elif event.type == "subscription_upgraded":
            before = event.mrr_before if event.mrr_before is not None else state.mrr
            if before is not None and event.mrr_after is not None:
                deltas += on_upgraded(state.cohort, when, event.mrr_after - before)
    return deltas
