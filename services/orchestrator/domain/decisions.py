"""What to do, decided from plain values: start, arm, exit, what each step does.

The use cases of ``orchestrator.service_layer`` compose them, on the PostgreSQL journey
store in service and on the in-memory one in the fake-clock unit tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from common.messages import OFFER_KEY
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
# A journey ended by a cancellation; a trigger postponed until the subscription is active.
CANCELLED = "cancelled"


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
    notification_id: str | None = None


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


def too_old_to_start(fact: Fact, now: datetime, rules: R.Rules) -> bool:
    """Whether ``fact``, an event that would start a journey, is too old to (older than
    ``rules.event_trigger_max_age`` at ``now``): history imported or replayed is not a
    moment to react to. Other facts (signals, scores, journey ends) are never too old."""
    max_age = rules.event_trigger_max_age
    return isinstance(fact, EventFact) and max_age is not None and now - fact.at > max_age


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


def postpone_reason(playbook: Playbook, block: str | None) -> str | None:
    """Whether a signal trigger's start that ``block`` stopped waits for the block to
    lift (returns what it waits for) instead of being dropped.

    Retention before expansion postpones a need (``retention first``: re-evaluated when
    the risk tier is no longer high and no retention journey is live), and so does a
    cancelled subscription (``cancelled``: until the customer is reactivated). The
    trigger is dropped if its signal turns off meanwhile. Other blocks (cooldown, a live
    journey, eligibility, a paused playbook) do not postpone.
    """
    if not isinstance(playbook.trigger, SignalTrigger):
        return None
    if block == R.RETENTION_FIRST:
        return R.RETENTION_FIRST
    if block == R.SUBSCRIPTION_CANCELLED:
        return CANCELLED
    return None


def arm_block(playbook: Playbook, customer: R.Customer) -> str | None:
    """Why a held trigger is armed blocked rather than counting its hold (None: it counts):
    a cancelled customer's needs wait for the reactivation, when the hold starts again."""
    if customer.subscription == "cancelled" and not playbook.admits_cancelled:
        return CANCELLED
    return None


def unblock_due(playbook: Playbook, blocked_by: str, now: datetime) -> datetime:
    """When a postponed trigger is due once its block lifts: at once after retention first
    (the signal has been on all along); after a reactivation, once the signal has been
    held again for the trigger's hold (0 for an unheld signal)."""
    if blocked_by == CANCELLED:
        return now + held_for(playbook)
    return now


def cancellation_ends(playbook: Playbook, fact: Fact) -> bool:
    """Whether ``fact`` is a cancellation that ends a live journey of ``playbook``: every
    playbook that does not admit cancelled customers (all but win_back)."""
    return (
        isinstance(fact, EventFact)
        and R.SUBSCRIPTION_STATES.get(fact.type) == "cancelled"
        and not playbook.admits_cancelled
    )


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
        return R.RETENTION_FIRST
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
    if cancellation_ends(playbook, fact):
        return CANCELLED
    return None


def observed(playbook: Playbook, fact: Fact, journey_id: str) -> str | None:
    """The name a step's wait-for-event may be waiting for, if ``fact`` is one."""
    names = {name for step in playbook.steps if step.wait for name in step.wait.for_}
    if isinstance(fact, DeliveryFact) and fact.journey_id == journey_id:
        return fact.status if fact.status in names else None
    if isinstance(fact, EventFact):
        return fact.type if fact.type in names else None
    return None


def schedule(playbook: Playbook, started_at: datetime) -> list[tuple[str, datetime | None]]:
    """(step id, due instant) for every step of a journey started at ``started_at``; a step
    timed from another step's send has no due instant yet (None, see :func:`follow_ups`)."""
    return [(step.id, None if step.from_ else started_at + step.after) for step in playbook.steps]


def follow_ups(playbook: Playbook, step_id: str, at: datetime) -> list[tuple[str, datetime]]:
    """(step id, due instant) of the steps timed from ``step_id``, which was sent (or
    skipped: what depends on it goes on, saying it was not sent) at ``at``."""
    return [(step.id, at + step.after) for step in playbook.follow_ups(step_id)]


def assign_arm(playbook: Playbook, customer_id: str) -> str:
    return CONTROL if R.in_holdout(playbook.name, customer_id, playbook.holdout) else TREATMENT


def pick_variant(playbook: Playbook, customer_id: str) -> str | None:
    """Deterministic A/B variant from the customer id (same customer, same variant)."""
    return R.pick_variant(playbook.name, playbook.variants, customer_id)


# --- firing a due step ---------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """A customer's marketing step waiting for a cap slot: due, or deferred by the cap.

    ``key`` names the step (a timer id, or journey and step); ``since`` is when it came
    due (the first time, if it was deferred since).
    """

    key: object
    priority: int
    since: datetime


def rank(waiting: Waiting) -> tuple[int, datetime]:
    """The order in which waiting steps take cap slots: the playbook's priority (highest
    first), then the one waiting longest."""
    return (-waiting.priority, waiting.since)


def ahead_of(step: Waiting, waiting: Iterable[Waiting]) -> int:
    """How many of the customer's waiting marketing steps take a slot before ``step``."""
    return sum(1 for w in waiting if w.key != step.key and rank(w) < rank(step))


@dataclass(frozen=True)
class Situation:
    """What a due step is decided on, besides the playbook and the clock."""

    customer: R.Customer
    arm: str = TREATMENT
    live_lanes: frozenset[str] = frozenset()  # lanes of the customer's other live journeys
    marketing_sent: tuple[datetime, ...] = ()  # when the cap counts recent marketing messages
    seen: frozenset[str] = field(default_factory=frozenset)  # waited-for names seen
    ahead: int = 0  # the customer's waiting marketing steps that go before this one
    started_at: datetime | None = None  # the journey's start (None: no profile wait)


@dataclass(frozen=True)
class StepDecision:
    """``send``, ``skip`` (with a reason), ``defer`` to ``until``, or ``exit`` the journey."""

    action: Literal["send", "skip", "defer", "exit"]
    reason: str | None = None
    until: datetime | None = None

    @property
    def send(self) -> bool:
        return self.action == "send"


FREQUENCY_CAP = "frequency cap"  # deferred: no slot free
PRIORITY_FIRST = "higher priority first"  # deferred: a waiting step ranked higher takes it
CAP_REASONS = frozenset({FREQUENCY_CAP, PRIORITY_FIRST})  # the step waits for a cap slot
AWAITING_PROFILE = "awaiting profile"  # deferred: the customer's first profile is on its way


def decide_step(
    playbook: Playbook, step: Step, situation: Situation, *, now: datetime, rules: R.Rules
) -> StepDecision:
    """What a due step does now. In order: a cancelled customer's journey of a playbook
    that does not admit cancelled customers exits; the control arm sends nothing; a
    wait-for-event branch; retention before expansion; consent and address (an email step
    of a customer with no profile yet is deferred for up to ``rules.profile_wait`` from the
    journey's start, looking again ``rules.profile_polls`` times, then skipped); quiet hours
    (customer messages only, deferred to their end); the frequency cap (marketing only,
    deferred until a slot is free for this step after the ``ahead`` steps that rank
    before it)."""
    customer = situation.customer
    if customer.subscription == "cancelled" and not playbook.admits_cancelled:
        return StepDecision("exit", CANCELLED)
    if situation.arm == CONTROL:
        return StepDecision("skip", "holdout")
    if step.wait is not None and situation.seen.intersection(step.wait.for_):
        action: Literal["skip", "exit"] = step.wait.on_event
        return StepDecision(action, step.wait.reason)
    if step.marketing and R.retention_first(playbook.lane, customer.tier, situation.live_lanes):
        return StepDecision("skip", R.RETENTION_FIRST)
    blocked = R.consent_block(step.channel, step.marketing, customer)
    if blocked == R.NO_EMAIL_ADDRESS and not customer.profiled and situation.started_at:
        # The score that started the journey can overtake the customer's first profile
        # (another topic: a failover or a backlog reads them in any order).
        gives_up = situation.started_at + rules.profile_wait
        if now < gives_up:
            return StepDecision(
                "defer",
                AWAITING_PROFILE,
                min(gives_up, now + rules.profile_wait / rules.profile_polls),
            )
    if blocked:
        return StepDecision("skip", blocked)
    if step.channel != "webhook":
        quiet = R.quiet_until(now, customer.time_zone, rules)
        if quiet is not None:
            return StepDecision("defer", "quiet hours", quiet)
    if step.marketing:
        free = R.cap_free_at(situation.marketing_sent, now, rules, ahead=situation.ahead)
        if free is not None:
            yielded = (
                situation.ahead > 0 and R.cap_free_at(situation.marketing_sent, now, rules) is None
            )
            return StepDecision("defer", PRIORITY_FIRST if yielded else FREQUENCY_CAP, free)
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
    journey: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What templates may use: profile fields, the step's offer (``offer``, the playbook's
    figures, which the templates state as ``offer.<name>``), the variant, the score
    explanation, and for a CSM task the journey so far (:func:`story.journey_story`)."""
    extra = {"journey": journey} if journey is not None else {}
    return {
        "first_name": profile.get("first_name"),
        "email": profile.get("email"),
        "plan": profile.get("plan"),
        "owner_csm": profile.get("owner_csm_email"),
        "variant": variant,
        "due_at": due_at.isoformat(),
        "day": step.after.days,
        "score": score,
        OFFER_KEY: dict(step.offer),
        **extra,
    }
