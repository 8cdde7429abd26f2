"""Rules across playbooks (docs/domain.md section 7), as pure functions over plain values.

Quiet hours in the customer's time zone, the frequency cap, consent, retention
before expansion, deterministic holdout and variant assignment. The numbers come
in through :class:`Rules` (built from the orchestrator's settings) or the playbook.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from orchestrator.domain.playbook import Channel, Eligibility, Lane


@dataclass(frozen=True)
class Rules:
    """The tunable numbers of the cross-playbook rules (from settings)."""

    cap_messages: int
    cap_window: timedelta
    quiet_start: time
    quiet_end: time
    default_time_zone: str
    # How long after its journey started an email step waits for the customer's first
    # profile (still on its way through Kafka) before it is skipped for want of an address.
    profile_wait: timedelta = timedelta(0)
    # How many times within ``profile_wait`` such a step looks again (it is deferred by
    # ``profile_wait / profile_polls`` each time, never beyond the end of the wait).
    profile_polls: int = 10
    # An event older than this (its occurred_at against now) starts no journey: a backfill
    # of past months, or a replay, is history, not a moment to react to (None: any age).
    event_trigger_max_age: timedelta | None = None


@dataclass(frozen=True)
class Customer:
    """What the rules know about one customer (projected from profiles, scores, signals)."""

    customer_id: str
    email: str | None = None
    time_zone: str | None = None
    plan: str | None = None
    segment: str | None = None
    tier: str | None = None
    consent_email: bool = False
    consent_in_app: bool = True
    unsubscribed: bool = False
    products: frozenset[str] = field(default_factory=frozenset)
    subscription: str = "active"  # cancelled after subscription_cancelled, until it restarts
    profiled: bool = True  # False: no profile of this customer has been projected yet

    @property
    def may_email(self) -> bool:
        """Email marketing allowed: consent given and not withdrawn by an unsubscribe."""
        return self.consent_email and not self.unsubscribed


def customer_from(
    customer_id: str,
    profile: Mapping[str, Any] | None,
    state: Mapping[str, Any] | None,
    tier: str | None,
) -> Customer:
    """The customer as the rules see it, from its profile row, learned state and tier.

    The plan is the later of the profile's and the last plan-changing payment's. An
    unsubscribe (a ``deliveries`` record) withdraws email marketing consent for good: a
    later profile that still says "consent" (product backends resend profiles for other
    reasons) does not undo it.
    """
    plan = profile["plan"] if profile else None
    if (
        state is not None
        and state["plan"]
        and (
            profile is None
            or state["plan_at"] is None
            or profile["profile_at"] is None
            or state["plan_at"] >= profile["profile_at"]
        )
    ):
        plan = state["plan"]
    return Customer(
        customer_id=customer_id,
        email=profile["email"] if profile else None,
        time_zone=profile["time_zone"] if profile else None,
        plan=plan,
        segment=state["segment"] if state else None,
        tier=tier,
        consent_email=bool(profile["consent_email"]) if profile else False,
        consent_in_app=bool(profile["consent_in_app"]) if profile else True,
        unsubscribed=state is not None and state["unsubscribed_at"] is not None,
        products=frozenset(state["products"] or ()) if state else frozenset(),
        subscription=(state["subscription"] if state and state["subscription"] else "active"),
        profiled=profile is not None,
    )


# --- quiet hours -----------------------------------------------------------------------


def zone_of(name: str | None, rules: Rules) -> ZoneInfo:
    """The customer's zone; an unknown or missing name falls back to the default zone."""
    for candidate in (name, rules.default_time_zone):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def quiet_until(instant: datetime, time_zone: str | None, rules: Rules) -> datetime | None:
    """If ``instant`` falls in quiet hours local to the customer, the UTC instant they end.

    The window ``[quiet_start, quiet_end)`` may wrap midnight (21:00-08:00). The end is
    the wall-clock ``quiet_end`` of the right local day, converted with that day's
    offset, so daylight-saving changes move the UTC instant, not the local hour.
    Returns None outside quiet hours.
    """
    zone = zone_of(time_zone, rules)
    local = instant.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    start, end = rules.quiet_start, rules.quiet_end
    if start == end:
        return None
    if start < end:
        quiet = start <= clock < end
        day = local.date()
    else:
        quiet = clock >= start or clock < end
        day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not quiet:
        return None
    # A wall time inside a spring-forward gap resolves (fold=0) to the instant just after it.
    return datetime.combine(day, end, tzinfo=zone).astimezone(UTC)


# --- frequency cap ---------------------------------------------------------------------

# Final outcomes the notifier reports for a notification (the deliveries topic).
SENT = "sent"
NOT_SENT = frozenset({"failed", "suppressed", "bounced"})


def outcome_after(current: str | None, status: str) -> str | None:
    """The message's final outcome once ``status`` is reported (``current`` before it).

    ``sent`` settles a message with no outcome yet; ``failed``, ``suppressed`` or
    ``bounced`` settle it for good, even after ``sent`` (a later bounce: the customer did
    not get it). Other statuses (opened, clicked...) change nothing.
    """
    if status in NOT_SENT and current not in NOT_SENT:
        return status
    if status == SENT and current is None:
        return SENT
    return current


def counts_at(
    decided_at: datetime, outcome: str | None, outcome_at: datetime | None
) -> datetime | None:
    """When the frequency cap counts a marketing message: the slot is reserved at the
    decision, the message counts at its send time once the notifier reports it sent,
    and the slot is released (None) once it is known not sent."""
    if outcome in NOT_SENT:
        return None
    if outcome == SENT and outcome_at is not None:
        return outcome_at
    return decided_at


def cap_free_at(
    counted: Iterable[datetime], now: datetime, rules: Rules, *, ahead: int = 0
) -> datetime | None:
    """None if one more marketing message may go now; else the instant one may.

    ``counted``: the instants the customer's marketing messages count at
    (:func:`counts_at`). At most ``cap_messages`` of them may fall in any window of
    ``cap_window``; an instant after ``now`` (a clock ahead of this one) counts too.
    ``ahead``: messages of the customer that take a slot before this one (higher
    priority, waiting): each takes the first free slot, and this one the next.
    """
    times = sorted(t for t in counted if t > now - rules.cap_window)
    if len(times) + ahead < rules.cap_messages:
        return None  # room for the ones ahead and this one
    at = now
    for _ in range(ahead + 1):
        at = _first_slot(times, at, rules)
        times.append(at)
        times.sort()
    return None if at == now else at


def _first_slot(times: Sequence[datetime], at: datetime, rules: Rules) -> datetime:
    """The first instant from ``at`` on when one more message keeps the cap (``times``
    sorted); each step moves to the instant the oldest message that must leave does."""
    while True:
        recent = [t for t in times if t > at - rules.cap_window]
        if len(recent) < rules.cap_messages:
            return at
        at = recent[len(recent) - rules.cap_messages] + rules.cap_window


# --- consent, eligibility, lanes ---------------------------------------------------------


NO_EMAIL_ADDRESS = "no email address"


def consent_block(channel: Channel, marketing: bool, customer: Customer) -> str | None:
    """Why a message on ``channel`` may not go to ``customer`` (None: it may)."""
    if channel == "email":
        if not customer.email:
            return NO_EMAIL_ADDRESS
        if marketing and customer.unsubscribed:
            return "unsubscribed"
        if marketing and not customer.consent_email:
            return "no email consent"
    if channel == "in_app" and marketing and not customer.consent_in_app:
        return "no in-app consent"
    return None


def ineligible(rule: Eligibility, customer: Customer) -> str | None:
    """Why ``customer`` may not enter (None: eligible)."""
    if rule.plans and customer.plan not in rule.plans:
        return f"plan {customer.plan} not in {list(rule.plans)}"
    if rule.segments and customer.segment not in rule.segments:
        return f"segment {customer.segment} not in {list(rule.segments)}"
    if "email" in rule.consent and not customer.may_email:
        return "no email consent"
    if "in_app" in rule.consent and not customer.consent_in_app:
        return "no in-app consent"
    if rule.subscription and customer.subscription not in rule.subscription:
        return f"subscription {customer.subscription}"  # "subscription cancelled" when cancelled
    bought = sorted(customer.products.intersection(rule.not_purchased))
    if bought:
        return f"already purchased {bought}"
    return None


RETENTION_LANES = frozenset({"retention"})
RETENTION_FIRST = "retention first"  # the block retention_first gives a start or a step
SUBSCRIPTION_CANCELLED = "subscription cancelled"  # the block ineligible gives a cancelled


def retention_first(lane: Lane, tier: str | None, live_lanes: Iterable[str]) -> bool:
    """True when an expansion message must wait: risk tier high or a retention journey live."""
    if lane != "expansion":
        return False
    return tier == "high" or bool(RETENTION_LANES.intersection(live_lanes))


# --- deterministic assignment ------------------------------------------------------------


def _unit(*parts: str) -> float:
    """A stable number in [0, 1) from the parts (SHA-256; same input, same number)."""
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_holdout(playbook: str, customer_id: str, share: float) -> bool:
    """Whether the customer is in the control arm of ``playbook`` (sends nothing)."""
    return _unit("holdout", playbook, customer_id) < share


def pick_variant(playbook: str, variants: Sequence[str], customer_id: str) -> str | None:
    """Deterministic A/B variant from the customer id (same customer, same variant)."""
    if not variants:
        return None
    return variants[int(_unit("variant", playbook, customer_id) * len(variants))]


# Payment events that change the subscription state (the rest leave it as it is).
SUBSCRIPTION_STATES: dict[str, str] = {
    "subscription_cancelled": "cancelled",
    "subscription_started": "active",
    "subscription_reactivated": "active",
}
