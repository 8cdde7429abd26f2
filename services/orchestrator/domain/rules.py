"""Rules across playbooks (DOMAIN section 7), as pure functions over plain values.

Quiet hours in the customer's time zone, the frequency cap, consent, retention
before expansion, deterministic holdout and variant assignment. The numbers come
in through :class:`Rules` (built from the orchestrator's settings) or the playbook.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
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

    @property
    def may_email(self) -> bool:
        """Email marketing allowed: consent given and not withdrawn by an unsubscribe."""
        return self.consent_email and not self.unsubscribed


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


def cap_free_at(sent: Iterable[datetime], now: datetime, rules: Rules) -> datetime | None:
    """None if one more marketing message may go now; else the instant one may.

    Counts the messages sent in ``(now - cap_window, now]``; when ``cap_messages`` of
    them are there, the next one may go when enough of them have left the window.
    """
    window = sorted(t for t in sent if now - rules.cap_window < t <= now)
    if len(window) < rules.cap_messages:
        return None
    return window[len(window) - rules.cap_messages] + rules.cap_window


# --- consent, eligibility, lanes ---------------------------------------------------------


def consent_block(channel: Channel, marketing: bool, customer: Customer) -> str | None:
    """Why a message on ``channel`` may not go to ``customer`` (None: it may)."""
    if channel == "email":
        if not customer.email:
            return "no email address"
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
        return f"subscription {customer.subscription}"
    bought = sorted(customer.products.intersection(rule.not_purchased))
    if bought:
        return f"already purchased {bought}"
    return None


RETENTION_LANES = frozenset({"retention"})


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
