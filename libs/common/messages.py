"""Records Tenure's services exchange on Kafka (signals, scores, notifications, deliveries).

Frozen, versioned pydantic models; every record carries ``schema_version``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.events import CustomerId, UtcDatetime

Tier = Literal["low", "medium", "high"]
HealthBand = Literal["high", "medium", "low", "at_risk"]
ClvSegment = Literal["low", "medium", "high"]
LoyaltyTier = Literal["bronze", "silver", "gold", "platinum"]
Channel = Literal["email", "in_app", "webhook"]
DeliveryStatus = Literal[
    "sent",
    "failed",
    "bounced",
    "opened",
    "clicked",
    "replied",
    "unsubscribed",
    "read",
    "dismissed",
    # Not sent because the address is on the suppression list or consent was withheld.
    "suppressed",
    # An email handed to the mail server by a notifier that died before it heard the
    # answer, and not sent again: it may or may not have been delivered.
    "unknown",
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


class LoyaltyRedemption(Message):
    """One redemption of loyalty points: accepted (the points were spent) or refused."""

    event_id: str
    reward: str
    cost: int | None = Field(description="Points the reward costs; None for an unknown reward.")
    occurred_at: UtcDatetime
    status: Literal["accepted", "refused"]
    reason: str | None = Field(default=None, description="Why it was refused.")


class ScoreSnapshot(Message):
    """The latest score of one customer, with its explanation (compacted ``scores`` topic)."""

    customer_id: CustomerId
    as_of: UtcDatetime = Field(
        description="When the score was evaluated: the newest event time counted, or the "
        "shared clock's time when the clock moved on without events."
    )
    risk_score: float = Field(ge=0, le=100)
    tier: Tier
    churn_probability: float = Field(ge=0, le=1)
    signals: tuple[SignalExplanation, ...] = ()
    red_flags: tuple[RedFlag, ...] = ()
    events_counted: int = Field(
        default=0,
        description="Events counted for the customer when this snapshot was computed (at "
        "as_of). Snapshots are published only when the score or its explanation changes: "
        "events since that changed nothing are not in it.",
    )
    # Added by the scoring issue (all optional, so older records still validate):
    plan: str | None = None
    health_score: float | None = Field(default=None, ge=0, le=100)
    health_band: HealthBand | None = None
    health_components: dict[str, float] = Field(
        default_factory=dict, description="Sub-scores 0-100: engagement, usage, satisfaction, value"
    )
    utilisation: dict[str, float] = Field(
        default_factory=dict, description="Plan utilisation per metric (1.0 = at the limit)."
    )
    feature_adoption: float | None = Field(default=None, ge=0, le=1)
    expansion_signals: tuple[SignalExplanation, ...] = Field(
        default=(), description="Active expansion signals (power_user, limit_*, roi_proven, ...)."
    )
    milestones: tuple[str, ...] = Field(default=(), description="Onboarding milestones reached.")
    clv: float | None = Field(default=None, ge=0)
    clv_segment: ClvSegment | None = None
    clv_monthly_churn: float | None = Field(
        default=None, gt=0, le=1, description="Monthly churn rate the CLV used."
    )
    clv_expansion_rate: float | None = Field(
        default=None, ge=0, description="Expansion rate the CLV used."
    )
    clv_rates_observed: bool = Field(
        default=False,
        description="True: the plan cohort's observed rates; false: the configured defaults.",
    )
    loyalty_points: int = Field(
        default=0, description="Points the customer can spend: earned minus redeemed."
    )
    loyalty_tier: LoyaltyTier = Field(
        default="bronze", description="By points earned: redeeming never lowers it."
    )
    loyalty_points_earned: int = Field(default=0, description="Points earned, ever.")
    redemptions: tuple[LoyaltyRedemption, ...] = Field(
        default=(), description="The customer's last redemptions, oldest first."
    )


class SignalChange(Message):
    """Edge-triggered: a signal turned on or off; tier, band, segment or loyalty tier changed."""

    customer_id: CustomerId
    occurred_at: UtcDatetime
    change: Literal[
        "signal_on",
        "signal_off",
        "tier_changed",
        "band_changed",
        "segment_changed",
        "loyalty_tier_changed",
    ]
    name: str
    value: float | str | None = None
    threshold: float | str | None = None
    previous: str | None = None
    current: str | None = None


OfferValue = str | int | float
OFFER_KEY = "offer"
_LEGACY_OFFER_PREFIX = "offer_"


class Notification(Message):
    """A request to deliver one step of a journey; ``notification_id`` is stable per step.

    The step's playbook ``offer`` block (the figures its messages state) travels as
    ``context["offer"]``, not as a field of its own: the model forbids unknown fields, so
    a notifier older than the offer would dead-letter a record with a new field, while the
    free-form context reaches it unchanged (schema version 1 both ways). Read it with
    :attr:`offer`.
    """

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

    @field_validator("context")
    @classmethod
    def _offer_is_flat(cls, context: dict[str, Any]) -> dict[str, Any]:
        offer = context.get(OFFER_KEY)
        if offer is None:
            return context
        if not isinstance(offer, dict) or not all(
            isinstance(k, str) and isinstance(v, OfferValue) and not isinstance(v, bool)
            for k, v in offer.items()
        ):
            raise ValueError(
                "context.offer must map names to a string or a number, as a playbook step's "
                f"offer does; got {offer!r}"
            )
        return context

    @property
    def offer(self) -> dict[str, OfferValue]:
        """The step's offer figures (``{"discount_pct": 30}``); empty when it has none.

        A record from an orchestrator older than ``context["offer"]`` carried the same
        figures as ``offer_<name>`` context keys; they are read when ``offer`` is absent.
        """
        offer = self.context.get(OFFER_KEY)
        if isinstance(offer, dict):
            return dict(offer)
        return {
            key.removeprefix(_LEGACY_OFFER_PREFIX): value
            for key, value in self.context.items()
            if key.startswith(_LEGACY_OFFER_PREFIX)
            and key != "offer_url"
            and isinstance(value, OfferValue)
            and not isinstance(value, bool)
        }


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


class Erasure(Message):
    """A customer's data was erased (``erasures`` topic, keyed by customer id).

    Published by the orchestrator through its outbox in the transaction that erased the
    customer's rows in PostgreSQL; scoring then deletes the customer's state (a tombstone
    on its changelog) and publishes a tombstone on ``scores``.
    """

    erasure_id: str
    customer_id: CustomerId
    erased_at: UtcDatetime
