"""The operator API's answers (pydantic models: they are its OpenAPI document)."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class Problem(BaseModel):
    error: str


class Profile(BaseModel):
    email: str | None = None
    first_name: str | None = None
    time_zone: str | None = None
    plan: str | None = None
    mrr: float | None = None
    consent_email: bool | None = None
    consent_in_app: bool | None = None
    owner_csm_id: str | None = None
    owner_csm_email: str | None = None
    traits: dict[str, Any] = Field(default_factory=dict, description="The profile as sent.")
    profile_at: datetime | None = None


class Learned(BaseModel):
    """What the orchestrator learned besides the profile (scores, signals, deliveries,
    payments)."""

    segment: str | None = None
    loyalty_tier: str | None = Field(
        None,
        description="The tier of the latest score snapshot (bronze until the points of "
        "silver); null only before scoring published one.",
    )
    plan: str | None = None
    plan_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    products: list[str] = []


class Score(BaseModel):
    as_of: datetime
    risk_score: float
    tier: str
    churn_probability: float
    events_counted_at_as_of: int | None = Field(
        None,
        description="Events scoring had counted for the customer when it computed this "
        "snapshot (at as_of). A snapshot is published only when the score or its "
        "explanation changes, so later events that changed nothing are not in it.",
    )
    explanation: dict[str, Any] = Field(
        description="The latest score snapshot as scoring published it: signals with their "
        "values, thresholds and contributions, red flags, health, CLV, loyalty."
    )


class Signal(BaseModel):
    name: str
    kind: str = Field(description="churn or expansion")
    group: str | None = None
    value: float | str | None = None
    threshold: float | str | None = None
    contribution: float | None = None


class Transition(BaseModel):
    at: datetime
    event: str
    from_state: str | None
    to_state: str
    detail: dict[str, Any] = {}


class Journey(BaseModel):
    journey_id: str
    customer_id: str
    playbook: str
    state: str
    arm: str | None = None
    variant: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    exit_reason: str | None = None
    paused_by: str | None = None
    history: list[Transition] = []


class Outcome(BaseModel):
    status: str
    at: datetime
    detail: str | None = None


class Message(BaseModel):
    notification_id: str
    journey_id: str | None = None
    playbook: str | None = None
    step: str | None = None
    channel: str
    template: str | None = None
    variant: str | None = None
    recipient: str | None = None
    created_at: datetime
    queued_at: datetime | None = Field(None, description="Written to the outbox.")
    published_at: datetime | None = Field(None, description="Published to Kafka by the relay.")
    delivery_status: str | None = Field(None, description="The notifier's delivery log.")
    delivery_attempts: int | None = None
    outcomes: list[Outcome] = Field(
        default=[], description="Every outcome reported: sent, opened, clicked, replied..."
    )


class Customer360(BaseModel):
    customer_id: str
    profile: Profile | None
    learned: Learned | None
    score: Score | None
    active_signals: list[Signal]
    journeys: list[Journey]
    messages: list[Message]


Money = dict[str, float]


class PlaybookSummary(BaseModel):
    name: str
    lane: str
    goal: str
    priority: int
    paused: bool
    steps: list[str]
    journeys: dict[str, int] = Field(description="Journeys by state.")
    revenue: Money = Field(
        default={},
        description="Revenue attributed to the treatment arm's journeys, by currency.",
    )


class Arm(BaseModel):
    """Results of a group of journeys: an arm (treatment, control) or a variant."""

    journeys: int
    converted: int = Field(
        description="Journeys with a conversion of the goal attributed (a payment) or an "
        "exit for a conversion reason, inside the attribution window."
    )
    conversion_rate: float | None
    revenue: Money = Field(default={}, description="Revenue attributed, by currency.")
    revenue_per_journey: Money | None = Field(
        default=None, description="Revenue / journeys, by currency."
    )
    messages_sent: int = Field(
        default=0, description="Customer messages sent (email, in-app); CSM tasks not counted."
    )
    revenue_per_message: Money | None = Field(
        default=None, description="Revenue / messages sent, by currency; null without messages."
    )


class PlaybookDetail(BaseModel):
    name: str
    paused: bool
    paused_at: datetime | None
    definition: dict[str, Any]
    journeys: dict[str, int] = Field(description="Journeys by state.")
    conversion_reasons: list[str] = Field(
        description="Exit reasons that count as a conversion (within the attribution window)."
    )
    arms: dict[str, Arm] = Field(description="treatment and control (the holdout).")
    variants: dict[str, Arm] = Field(
        default={}, description="The treatment arm by A/B variant (playbooks with variants)."
    )
    revenue: Money = Field(
        default={},
        description="Revenue attributed to the treatment arm's journeys, by currency.",
    )
    revenue_per_message: Money | None = Field(
        default=None, description="Treatment revenue / customer messages sent, by currency."
    )
    uplift: float | None = Field(
        description="Conversion rate of treatment minus that of control (absolute)."
    )
    relative_uplift: float | None = Field(description="uplift / control conversion rate.")
    revenue_per_journey_uplift: Money | None = Field(
        default=None,
        description="Revenue per treatment journey minus revenue per control journey.",
    )
    incremental_revenue: Money | None = Field(
        default=None,
        description="revenue_per_journey_uplift x treatment journeys: revenue the messages "
        "added over the holdout.",
    )


class PlaybookPause(BaseModel):
    playbook: str
    paused: bool
    journeys_changed: int


class ErasureOut(BaseModel):
    """An erasure, as recorded."""

    erasure_id: str
    customer_id: str
    erased_at: datetime
    requested_by: str
    removed: dict[str, int] = Field(
        description="Rows removed or anonymised in each store (0: nothing was kept there)."
    )
    scoring: str = Field(
        description="'pending' until the scoring worker confirms it dropped the customer's "
        "state (a tombstone on the scores topic); the erasure then completes by itself."
    )
