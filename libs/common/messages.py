"""Records Tenure's services exchange on Kafka (signals, scores, notifications, deliveries).

Frozen, versioned pydantic models; every record carries ``schema_version``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.events import CustomerId, UtcDatetime

Tier = Literal["low", "medium", "high"]
Channel = Literal["email", "in_app", "webhook"]
DeliveryStatus = Literal[
    "sent", "failed", "bounced", "opened", "clicked", "replied", "unsubscribed", "read", "dismissed"
]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1


class SignalExplanation(Message):
    """Why one signal is active: its measured value against its threshold."""

    name: str
    group: str
    value: float | str | None
    threshold: float | str | None
    contribution: float = Field(description="Points this signal adds to risk_score (0-100).")


class RedFlag(Message):
    name: str
    signals: tuple[str, ...]
    floor: float


class ScoreSnapshot(Message):
    """The latest score of one customer, with its explanation (compacted ``scores`` topic)."""

    customer_id: CustomerId
    as_of: UtcDatetime = Field(description="Event time of the newest event counted.")
    risk_score: float = Field(ge=0, le=100)
    tier: Tier
    churn_probability: float = Field(ge=0, le=1)
    signals: tuple[SignalExplanation, ...] = ()
    red_flags: tuple[RedFlag, ...] = ()
    events_counted: int = 0


class SignalChange(Message):
    """Edge-triggered: a signal turned on or off, or the tier changed."""

    customer_id: CustomerId
    occurred_at: UtcDatetime
    change: Literal["signal_on", "signal_off", "tier_changed"]
    name: str
    value: float | str | None = None
    threshold: float | str | None = None
    previous: str | None = None
    current: str | None = None


class Notification(Message):
    """A request to deliver one step of a journey; ``notification_id`` is stable per step."""

    notification_id: str
    customer_id: CustomerId
    journey_id: str
    playbook: str
    step: str
    channel: Channel
    template: str
    variant: str | None = None
    priority: Literal["normal", "high"] = "normal"
    recipient: str | None = Field(
        default=None, description="Email address, or the webhook target name (csm, escalation)."
    )
    created_at: UtcDatetime
    context: dict[str, Any] = Field(default_factory=dict)


class Delivery(Message):
    """An outcome of a notification, reported by the notifier."""

    notification_id: str
    customer_id: CustomerId
    journey_id: str | None = None
    playbook: str | None = None
    step: str | None = None
    channel: Channel
    status: DeliveryStatus
    occurred_at: UtcDatetime
    detail: str | None = None
