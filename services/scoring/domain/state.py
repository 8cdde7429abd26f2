"""Per-customer scoring state: bounded, JSON-serialisable, updated by pure functions."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def day_number(instant: datetime) -> int:
    """Days since 1970-01-01 (UTC) of ``instant``: the bucket an event is counted in."""
    return (instant - EPOCH).days


@dataclass
class CustomerState:
    """What the scorer remembers of one customer.

    Counters are daily buckets (day number → amount) kept for the longest window,
    so memory is bounded however many events arrive; ``seen`` remembers the last
    event ids to drop duplicates; features and users are capped by the model's limits.
    Fields ending in ``_emitted`` hold what was last published, so that output is
    edge-triggered.
    """

    customer_id: str
    seen: list[str] = field(default_factory=list)
    counters: dict[str, dict[int, float]] = field(default_factory=dict)
    latest: dict[str, tuple[str, float]] = field(default_factory=dict)  # source → (ISO, value)
    levels: dict[str, tuple[str, float]] = field(default_factory=dict)  # metric → (ISO, value)
    overdue: dict[str, str] = field(default_factory=dict)  # invoice id → overdue since (ISO)
    paid: dict[str, str] = field(default_factory=dict)  # invoice id → paid at (ISO), recent only
    features: dict[str, int] = field(default_factory=dict)  # feature → last day used
    users: dict[str, int] = field(default_factory=dict)  # user id → last day active
    plan: str | None = None
    plan_at: str | None = None  # event time of the plan and MRR (ISO): the newest wins
    mrr: float | None = None
    started: str | None = None  # start of use (ISO): subscription start, signup or first event
    first_seen: str | None = None  # event time of the earliest event counted (ISO)
    as_of: str | None = None  # newest event time counted (ISO)
    events_counted: int = 0
    power_since: str | None = None  # since when adoption has held the power-user level (ISO)
    milestones: dict[str, str] = field(default_factory=dict)  # milestone → reached at (ISO)
    onboarding_features: list[str] = field(default_factory=list)
    loyalty_points: int = 0
    loyalty_days: dict[int, list[str]] = field(default_factory=dict)  # day → what earned points
    loyalty_spent: int = 0  # points redeemed (``loyalty_points`` is what was earned)
    redemptions: list[dict[str, Any]] = field(default_factory=list)  # the last ones, oldest first
    cancelled_at: str | None = None  # the subscription's cancellation (ISO), until reactivated
    cohort: dict[str, list[Any]] = field(default_factory=dict)  # month → [plan, mrr, lost 0/1]
    # what was last emitted
    active: dict[str, Any] = field(default_factory=dict)  # churn signal → value
    lifecycle: dict[str, Any] = field(default_factory=dict)  # expansion signal → value
    tier: str = "low"
    band: str | None = None
    segment: str | None = None
    loyalty_tier: str = "bronze"
    last_snapshot: str | None = None  # fingerprint of the last emitted snapshot
    evaluated_at: str | None = None  # when the state was last evaluated (ISO)

    def clone(self) -> CustomerState:
        """A copy that shares nothing mutable with this state (much faster than deepcopy)."""
        return replace(
            self,
            seen=list(self.seen),
            counters={k: dict(v) for k, v in self.counters.items()},
            latest=dict(self.latest),
            levels=dict(self.levels),
            overdue=dict(self.overdue),
            paid=dict(self.paid),
            features=dict(self.features),
            users=dict(self.users),
            milestones=dict(self.milestones),
            onboarding_features=list(self.onboarding_features),
            loyalty_days={d: list(v) for d, v in self.loyalty_days.items()},
            cohort={m: list(v) for m, v in self.cohort.items()},
            redemptions=list(self.redemptions),  # entries are never changed once written
            active=dict(self.active),
            lifecycle=dict(self.lifecycle),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what the table stores). Field by field: ``asdict`` is slow."""
        data = {name: getattr(self, name) for name in _FIELDS}
        data["counters"] = {k: {str(d): n for d, n in v.items()} for k, v in self.counters.items()}
        data["latest"] = {k: list(v) for k, v in self.latest.items()}
        data["levels"] = {k: list(v) for k, v in self.levels.items()}
        data["loyalty_days"] = {str(d): v for d, v in self.loyalty_days.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CustomerState:
        data = {k: v for k, v in data.items() if k in _FIELDS}
        data["counters"] = {
            k: {int(d): float(n) for d, n in v.items()} for k, v in data.get("counters", {}).items()
        }
        data["latest"] = {k: (v[0], float(v[1])) for k, v in data.get("latest", {}).items()}
        data["levels"] = {k: (v[0], float(v[1])) for k, v in data.get("levels", {}).items()}
        data["loyalty_days"] = {int(d): list(v) for d, v in data.get("loyalty_days", {}).items()}
        return cls(**data)


_FIELDS = tuple(f.name for f in fields(CustomerState))


# -- writing the state's buckets (every section folds its facts with these) ----------------


def add(state: CustomerState, counter: str, when: datetime, amount: float = 1.0) -> None:
    """Count ``amount`` in the daily bucket of ``when`` (in place)."""
    buckets = state.counters.setdefault(counter, {})
    day = day_number(when)
    buckets[day] = buckets.get(day, 0.0) + amount


def mark(state: CustomerState, counter: str, when: datetime) -> None:
    """A once-a-day fact (the customer was active that day)."""
    state.counters.setdefault(counter, {})[day_number(when)] = 1.0


def set_latest(state: CustomerState, source: str, when: datetime, value: float) -> None:
    """Keep ``value`` as the latest of ``source`` if it is newer by event time (in place)."""
    previous = state.latest.get(source)
    stamp = when.isoformat()
    # Out-of-order events: the newest by event time wins, whatever the arrival order; two
    # answers stamped the same instant keep the lower (the cautious reading of risk).
    if previous is None or previous[0] < stamp or (previous[0] == stamp and value < previous[1]):
        state.latest[source] = (stamp, value)


def remember(table: dict[str, int], key: str, day: int, cap: int) -> None:
    """Record ``key`` as seen on ``day``; beyond ``cap`` keys, forget the least recent."""
    if key not in table and len(table) >= cap:
        del table[min(table, key=lambda k: table[k])]
    table[key] = max(day, table.get(key, day))


def newest_event_time(state: CustomerState) -> datetime:
    """The newest event time counted (the earliest instant when none was)."""
    return datetime.fromisoformat(state.as_of) if state.as_of else datetime.min.replace(tzinfo=UTC)
