"""What to do, decided from plain values: start, exit, what each step sends."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.domain.playbook import DeliveryExit, Playbook, ScoreExit

NOTIFICATION_NAMESPACE = uuid.UUID("8f6c2a1e-3b0d-4c57-9a43-2f1e5d7c9b60")


def notification_id(journey_id: str, step: str) -> str:
    """Stable per (journey, step): a retried step can never make a second notification."""
    return str(uuid.uuid5(NOTIFICATION_NAMESPACE, f"{journey_id}/{step}"))


def should_start(
    playbook: Playbook,
    *,
    churn_probability: float,
    last_ended_at: datetime | None,
    has_live_journey: bool,
    now: datetime,
) -> bool:
    """Trigger met, no live journey for this playbook, and the cooldown elapsed."""
    if has_live_journey:
        return False
    if churn_probability <= playbook.trigger.churn_probability_above:
        return False
    return last_ended_at is None or now - last_ended_at >= playbook.cooldown


def exit_on_score(playbook: Playbook, churn_probability: float) -> str | None:
    for rule in playbook.exits:
        if isinstance(rule, ScoreExit) and churn_probability < rule.churn_probability_below:
            return rule.reason
    return None


def exit_on_delivery(playbook: Playbook, status: str) -> str | None:
    for rule in playbook.exits:
        if isinstance(rule, DeliveryExit) and status in rule.statuses:
            return rule.reason
    return None


def schedule(playbook: Playbook, started_at: datetime) -> list[tuple[str, datetime]]:
    """(step id, due instant) for every step of a journey started at ``started_at``."""
    return [(step.id, started_at + step.after) for step in playbook.steps]


def pick_variant(playbook: Playbook, customer_id: str) -> str | None:
    """Deterministic A/B variant from the customer id (same customer, same variant)."""
    if not playbook.variants:
        return None
    digest = hashlib.sha256(f"{playbook.name}:{customer_id}".encode()).digest()
    return playbook.variants[int.from_bytes(digest[:8], "big") % len(playbook.variants)]


@dataclass(frozen=True)
class StepDecision:
    send: bool
    reason: str | None = None


def decide_step(
    playbook: Playbook,
    step_id: str,
    *,
    email: str | None,
    consent_email: bool,
    consent_in_app: bool,
) -> StepDecision:
    """Whether a due step is sent, or skipped (and why)."""
    step = playbook.step(step_id)
    if step.channel == "email":
        if not email:
            return StepDecision(False, "no email address")
        if step.marketing and not consent_email:
            return StepDecision(False, "no email consent")
    if step.channel == "in_app" and step.marketing and not consent_in_app:
        return StepDecision(False, "no in-app consent")
    return StepDecision(True)


def step_context(
    profile: dict[str, Any],
    score: dict[str, Any] | None,
    variant: str | None,
    due_at: datetime,
    step_offset: timedelta,
) -> dict[str, Any]:
    """What templates may use: profile fields, the offer variant and the score explanation."""
    return {
        "first_name": profile.get("first_name"),
        "email": profile.get("email"),
        "plan": profile.get("plan"),
        "owner_csm": profile.get("owner_csm_email"),
        "variant": variant,
        "due_at": due_at.isoformat(),
        "day": step_offset.days,
        "score": score,
    }
