"""What to do, decided from plain values: start, arm, exit, what each step does.

The in-memory engine (:mod:`orchestrator.domain.engine`) and the PostgreSQL-backed
consumers and timer worker call the same functions, so the unit timelines and the
running service agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from orchestrator.domain import rules as R
from orchestrator.domain.playbook import (
    DeliveryExit,
    EventExit,
    EventTrigger,
    JourneyTrigger,
    Playbook,
    ScoreExit,
    ScoreTrigger,
    SignalExit,
    SignalTrigger,
    Step,
)

NOTIFICATION_NAMESPACE = uuid.UUID("8f6c2a1e-3b0d-4c57-9a43-2f1e5d7c9b60")
CONTROL = "control"
TREATMENT = "treatment"


def notification_id(journey_id: str, step: str) -> str:
    """Stable per (journey, step): a retried step can never make a second notification."""
    return str(uuid.uuid5(NOTIFICATION_NAMESPACE, f"{journey_id}/{step}"))


# --- facts: what happened, as the rules see it ---------------------------------------


@dataclass(frozen=True)
class SignalFact:
    name: str
    on: bool
    at: datetime


@dataclass(frozen=True)
class EventFact:
    type: str
    at: datetime
    plan: str | None = None
    product: str | None = None


@dataclass(frozen=True)
class DeliveryFact:
    status: str
    at: datetime
    journey_id: str | None = None


@dataclass(frozen=True)
class ScoreFact:
    values: Mapping[str, float]
    at: datetime
    tier: str | None = None


@dataclass(frozen=True)
class JourneyEndFact:
    playbook: str
    reason: str
    at: datetime


Fact = SignalFact | EventFact | DeliveryFact | ScoreFact | JourneyEndFact

TriggerEffect = Literal["start", "arm", "disarm"]


def trigger_effect(playbook: Playbook, fact: Fact) -> TriggerEffect | None:
    """What ``fact`` does to ``playbook``'s trigger: start a journey now, arm a held-signal
    timer (it starts the journey when it fires), disarm it, or nothing."""
    trigger = playbook.trigger
    if isinstance(trigger, ScoreTrigger) and isinstance(fact, ScoreFact):
        value = fact.values.get(trigger.field)
        return "start" if value is not None and value > trigger.above else None
    if isinstance(trigger, SignalTrigger) and isinstance(fact, SignalFact):
        if fact.name not in trigger.signals:
            return None
        if not fact.on:
            return "disarm"
        return "arm" if trigger.held > timedelta(0) else "start"
    if isinstance(trigger, EventTrigger) and isinstance(fact, EventFact):
        return "start" if fact.type in trigger.types else None
    if (
        isinstance(trigger, JourneyTrigger)
        and isinstance(fact, JourneyEndFact)
        and fact.playbook == trigger.playbook
        and fact.reason in trigger.reasons
    ):
        return "start"
    return None


def held_for(playbook: Playbook) -> timedelta:
    """How long a signal must stay on before the journey starts (0 for other triggers)."""
    return playbook.trigger.held if isinstance(playbook.trigger, SignalTrigger) else timedelta(0)


def rearm_at(
    playbook: Playbook, block: str | None, *, now: datetime, last_ended_at: datetime | None
) -> datetime:
    """When a held trigger that just fired is due again, its signal still being on.

    A held signal keeps one pending trigger while it stays on (its signal_off cancels
    it), so that a customer still in that state re-enters once the cooldown allows:
    after a start, or any other block, it is checked again one hold period later;
    blocked by the cooldown, when the cooldown ends.
    """
    if block == "cooldown" and last_ended_at is not None:
        return last_ended_at + playbook.cooldown
    return now + held_for(playbook)


def start_block(
    playbook: Playbook,
    customer: R.Customer,
    *,
    live_lanes: frozenset[str],
    last_ended_at: datetime | None,
    has_live_journey: bool,
    paused: bool,
    now: datetime,
) -> str | None:
    """Why a triggered journey does not start (None: it starts).

    One live journey per playbook per customer, the re-entry cooldown, eligibility,
    a paused playbook, and retention before expansion.
    """
    if paused:
        return "playbook paused"
    if has_live_journey:
        return "journey already live"
    if last_ended_at is not None and now - last_ended_at < playbook.cooldown:
        return "cooldown"
    reason = R.ineligible(playbook.eligibility, customer)
    if reason:
        return reason
    if R.retention_first(playbook.lane, customer.tier, live_lanes):
        return "retention first"
    return None


def exit_reason(playbook: Playbook, fact: Fact, journey_id: str) -> str | None:
    """The exit ``fact`` causes for a live journey of ``playbook`` (None: it goes on)."""
    for rule in playbook.exits:
        if isinstance(rule, DeliveryExit) and isinstance(fact, DeliveryFact):
            mine = rule.any_message or fact.journey_id == journey_id
            if mine and fact.status in rule.statuses:
                return rule.reason
        elif isinstance(rule, ScoreExit) and isinstance(fact, ScoreFact):
            value = fact.values.get(rule.field)
            if value is None:
                continue
            if rule.below is not None and value < rule.below:
                return rule.reason
            if rule.at_least is not None and value >= rule.at_least:
                return rule.reason
        elif isinstance(rule, EventExit) and isinstance(fact, EventFact):
            if fact.type not in rule.types:
                continue
            if rule.plans and fact.plan not in rule.plans:
                continue
            if rule.products and fact.product not in rule.products:
                continue
            return rule.reason
        elif (
            isinstance(rule, SignalExit)
            and isinstance(fact, SignalFact)
            and fact.name == rule.signal
            and fact.on == (rule.becomes == "active")
        ):
            return rule.reason
    return None


def observed(playbook: Playbook, fact: Fact, journey_id: str) -> str | None:
    """The name a step's wait-for-event may be waiting for, if ``fact`` is one."""
    names = {name for step in playbook.steps if step.wait for name in step.wait.for_}
    if isinstance(fact, DeliveryFact) and fact.journey_id == journey_id:
        return fact.status if fact.status in names else None
    if isinstance(fact, EventFact):
        return fact.type if fact.type in names else None
    return None


def schedule(playbook: Playbook, started_at: datetime) -> list[tuple[str, datetime]]:
    """(step id, due instant) for every step of a journey started at ``started_at``."""
    return [(step.id, started_at + step.after) for step in playbook.steps]


def assign_arm(playbook: Playbook, customer_id: str) -> str:
    return CONTROL if R.in_holdout(playbook.name, customer_id, playbook.holdout) else TREATMENT


def pick_variant(playbook: Playbook, customer_id: str) -> str | None:
    """Deterministic A/B variant from the customer id (same customer, same variant)."""
    return R.pick_variant(playbook.name, playbook.variants, customer_id)


# --- firing a due step ---------------------------------------------------------------------


@dataclass(frozen=True)
class Situation:
    """What a due step is decided on, besides the playbook and the clock."""

    customer: R.Customer
    arm: str = TREATMENT
    live_lanes: frozenset[str] = frozenset()  # lanes of the customer's other live journeys
    marketing_sent: tuple[datetime, ...] = ()  # recent marketing messages to the customer
    seen: frozenset[str] = field(default_factory=frozenset)  # waited-for names seen


@dataclass(frozen=True)
class StepDecision:
    """``send``, ``skip`` (with a reason), ``defer`` to ``until``, or ``exit`` the journey."""

    action: Literal["send", "skip", "defer", "exit"]
    reason: str | None = None
    until: datetime | None = None

    @property
    def send(self) -> bool:
        return self.action == "send"


def decide_step(
    playbook: Playbook, step: Step, situation: Situation, *, now: datetime, rules: R.Rules
) -> StepDecision:
    """What a due step does now. In order: the control arm sends nothing; a wait-for-event
    branch; retention before expansion; consent and address; quiet hours (customer
    messages only, deferred to their end); the frequency cap (marketing only, deferred
    until a message leaves the window)."""
    customer = situation.customer
    if situation.arm == CONTROL:
        return StepDecision("skip", "holdout")
    if step.wait is not None and situation.seen.intersection(step.wait.for_):
        action: Literal["skip", "exit"] = step.wait.on_event
        return StepDecision(action, step.wait.reason)
    if step.marketing and R.retention_first(playbook.lane, customer.tier, situation.live_lanes):
        return StepDecision("skip", "retention first")
    blocked = R.consent_block(step.channel, step.marketing, customer)
    if blocked:
        return StepDecision("skip", blocked)
    if step.channel != "webhook":
        quiet = R.quiet_until(now, customer.time_zone, rules)
        if quiet is not None:
            return StepDecision("defer", "quiet hours", quiet)
    if step.marketing:
        free = R.cap_free_at(situation.marketing_sent, now, rules)
        if free is not None:
            return StepDecision("defer", "frequency cap", free)
    return StepDecision("send")


def recipient(step: Step, email: str | None) -> str | None:
    """The notification's recipient: the address for email, the webhook target name (csm,
    escalation) for a CSM task, none for in-app (the inbox is the customer's)."""
    if step.channel == "email":
        return email
    if step.channel == "webhook":
        return step.recipient
    return None


def step_context(
    profile: dict[str, Any],
    score: dict[str, Any] | None,
    variant: str | None,
    due_at: datetime,
    step: Step,
) -> dict[str, Any]:
    """What templates may use: profile fields, the offer, the variant, the score explanation."""
    return {
        "first_name": profile.get("first_name"),
        "email": profile.get("email"),
        "plan": profile.get("plan"),
        "owner_csm": profile.get("owner_csm_email"),
        "variant": variant,
        "due_at": due_at.isoformat(),
        "day": step.after.days,
        "score": score,
        **{f"offer_{k}": v for k, v in step.offer.items()},
    }
