"""Loyalty (docs/domain.md section 6.3): points earned once a day, tiers, redemptions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from common.events import UsageEvent
from scoring.domain.model import LoyaltyTiers, ScoringModel
from scoring.domain.state import CustomerState, day_number, newest_event_time


def earn(state: CustomerState, model: ScoringModel, when: datetime, what: str, points: int) -> None:
    """Award once-a-day loyalty points for ``what`` on the day of ``when`` (in place)."""
    day = day_number(when)
    if day <= day_number(newest_event_time(state)) - model.longest_window_days:
        return  # older than the days remembered: we cannot tell whether it was awarded
    earned = state.loyalty_days.setdefault(day, [])
    if what in earned or len(earned) >= model.loyalty.max_features_per_day:
        return
    earned.append(what)
    state.loyalty_points += points


def redeem(state: CustomerState, model: ScoringModel, event: UsageEvent) -> dict[str, Any]:
    """Spend the reward's points if the balance covers them; record the outcome (in place).

    The balance is what was earned minus what was spent, in arrival order (a redemption
    is a transaction: it is judged on the points known when it arrives). A reward not
    in the model's catalog, or one the balance cannot cover, is refused with the reason
    and spends nothing. Returns the recorded redemption.
    """
    reward = event.reward or ""
    cost = model.loyalty.redemptions.get(reward)
    balance = state.loyalty_points - state.loyalty_spent
    if cost is None:
        known = ", ".join(sorted(model.loyalty.redemptions))
        status, reason = "refused", f"unknown reward {reward!r} (known: {known})"
    elif cost > balance:
        status, reason = "refused", f"balance {balance} is below the cost {cost}"
    else:
        state.loyalty_spent += cost
        status, reason = "accepted", None
    entry = {
        "event_id": event.event_id,
        "reward": reward,
        "cost": cost,
        "occurred_at": event.occurred_at.isoformat(),
        "status": status,
        "reason": reason,
    }
    state.redemptions.append(entry)
    del state.redemptions[: -model.loyalty.redemptions_remembered]
    return entry


def loyalty_tier_for(points: int, tiers: LoyaltyTiers) -> str:
    """The tier of ``points`` earned (spending never lowers it)."""
    if points >= tiers.platinum:
        return "platinum"
    if points >= tiers.gold:
        return "gold"
    if points >= tiers.silver:
        return "silver"
    return "bronze"
