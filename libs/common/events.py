"""The events product backends send (docs/domain.md section 2), as frozen, versioned models.

An event is one JSON object: the envelope fields (``event_id``, ``customer_id``,
``occurred_at``, ``kind``, ``type``, ``schema_version``) plus the fields of its
kind. ``kind`` selects the model; ``type`` must be one of the kind's types.
Changing a model means a new ``schema_version``, a round-trip test and an
old-version fixture under ``tests/unit/common/fixtures``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
)

SCHEMA_VERSION: Literal[1] = 1

CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
"""Customer ids: 1-128 characters, letters, digits and ``. _ : @ -``, not starting with a symbol."""


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00: pydantic only catches ValueError
        raise ValueError("out of range once converted to UTC") from None


CustomerId = Annotated[str, Field(pattern=CUSTOMER_ID_PATTERN, examples=["acme-42"])]
EventId = Annotated[str, Field(min_length=1, max_length=128, examples=["evt_01HZX"])]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(max_length=5000)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])]
Money = Annotated[float, Field(ge=0, le=1e9)]
Email = Annotated[
    str,
    Field(
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        examples=["ana@acme.example"],
        description="An email address (checked for shape; deliverability is the mailer's job).",
    ),
]
Sentiment = Annotated[float, Field(ge=0, le=1, description="0 = most negative, 1 = most positive")]

Metric = Literal["documents", "api_calls", "seats", "storage_gb", "integrations"]


class EventBase(BaseModel):
    """The envelope: fields every event carries."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: EventId
    customer_id: CustomerId
    occurred_at: UtcDatetime


class UsageEvent(EventBase):
    kind: Literal["usage"]
    type: Literal[
        "feature_used", "quota_consumed", "outcome_reported", "limit_blocked", "reward_redeemed"
    ]
    user_id: ShortText | None = None
    feature: ShortText | None = None
    metric: Metric | None = None
    quantity: Annotated[float, Field(ge=0, le=1e12)] | None = None
    value: Annotated[float, Field(ge=-1e6, le=1e6, description="e.g. ROI in %")] | None = None
    # Added without a new schema version: optional, so every earlier event still validates.
    reward: ShortText | None = Field(
        default=None,
        validate_default=True,
        examples=["premium_feature"],
        description="reward_redeemed: the loyalty reward the customer spent points on "
        "(a name of the scoring model's redemption catalog, e.g. premium_feature, training, "
        "priority_support, beta_access, custom_feature). Required for that type only.",
    )

    @field_validator("reward")
    @classmethod
    def _reward_for_redemptions(cls, reward: str | None, info: ValidationInfo) -> str | None:
        if reward is None and info.data.get("type") == "reward_redeemed":
            raise ValueError("required when type is reward_redeemed")
        return reward


class PaymentEvent(EventBase):
    kind: Literal["payment"]
    type: Literal[
        "invoice_paid",
        "payment_failed",
        "invoice_overdue",
        "subscription_started",
        "subscription_upgraded",
        "subscription_downgraded",
        "downgrade_requested",
        "subscription_cancelled",
        "subscription_reactivated",
        "purchase",
    ]
    invoice_id: ShortText | None = None
    amount: Money | None = None
    currency: Currency | None = None
    plan: ShortText | None = None
    mrr_before: Money | None = None
    mrr_after: Money | None = None
    days_late: Annotated[int, Field(ge=0, le=3650)] | None = None
    product: ShortText | None = None


class LoginEvent(EventBase):
    kind: Literal["login"]
    type: Literal["login", "session_started"]
    user_id: ShortText
    device: ShortText | None = None


class SupportEvent(EventBase):
    kind: Literal["support"]
    type: Literal["ticket_opened", "ticket_closed", "nps_response", "survey_response", "comment"]
    ticket_id: ShortText | None = None
    score: Annotated[int, Field(ge=0, le=10, description="NPS 0-10, survey 1-10")] | None = None
    sentiment: Sentiment | None = None
    text: LongText | None = None


class Consent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    email_marketing: bool = False
    in_app: bool = True


class Csm(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: ShortText
    email: Email | None = None


class ProfileEvent(EventBase):
    kind: Literal["profile"]
    type: Literal["identify"]
    email: Email | None = None
    first_name: ShortText | None = None
    locale: Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] | None = None
    time_zone: ShortText | None = None
    plan: ShortText | None = None
    mrr: Money | None = None
    currency: Currency | None = None
    signup_date: date | None = None
    consent: Consent | None = None
    owner_csm: Csm | None = None
    account_id: ShortText | None = None
    traits: Annotated[dict[str, Any], Field(max_length=50)] = Field(default_factory=dict)


class IntentEvent(EventBase):
    kind: Literal["intent"]
    type: Literal[
        "competitor_visit",
        "alternative_search",
        "competitor_evaluation",
        "competitor_trial",
        "contract_review",
        "social_mention",
        "referral",
        "social_share",
    ]
    source: ShortText | None = None
    sentiment: Sentiment | None = None


Event = Annotated[
    UsageEvent | PaymentEvent | LoginEvent | SupportEvent | ProfileEvent | IntentEvent,
    Field(discriminator="kind"),
]
"""Any event; ``kind`` picks the model."""

EVENT_MODELS: dict[str, type[EventBase]] = {
    "usage": UsageEvent,
    "payment": PaymentEvent,
    "login": LoginEvent,
    "support": SupportEvent,
    "profile": ProfileEvent,
    "intent": IntentEvent,
}

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: bytes | str | dict[str, Any]) -> Event:
    """Validate one event from JSON bytes, text or a dict. Raises ``pydantic.ValidationError``."""
    if isinstance(data, dict):
        return event_adapter.validate_python(data)
    return event_adapter.validate_json(data)


EXAMPLES: dict[str, dict[str, Any]] = {
    "usage": {
        "event_id": "evt_usage_1",
        "customer_id": "acme-42",
        "occurred_at": "2026-11-20T10:15:00Z",
        "kind": "usage",
        "type": "feature_used",
        "user_id": "u-7",
        "feature": "reports",
    },
    "payment": {
        "event_id": "evt_pay_1",
        "customer_id": "acme-42",
        "occurred_at": "2026-11-20T10:15:00Z",
        "kind": "payment",
        "type": "invoice_overdue",
        "invoice_id": "inv-2026-11",
        "amount": 99.0,
        "currency": "EUR",
        "days_late": 9,
    },
    "login": {
        "event_id": "evt_login_1",
        "customer_id": "acme-42",
        "occurred_at": "2026-11-20T10:15:00Z",
        "kind": "login",
        "type": "login",
        "user_id": "u-7",
        "device": "web",
    },
    "support": {
        "event_id": "evt_support_1",
        "customer_id": "acme-42",
        "occurred_at": "2026-11-20T10:15:00Z",
        "kind": "support",
        "type": "nps_response",
        "score": 4,
        "sentiment": 0.2,
        "text": "Too slow lately",
    },
    "profile": {
        "event_id": "evt_profile_1",
        "customer_id": "acme-42",
        "occurred_at": "2026-11-20T10:15:00Z",
        "kind": "profile",
        "type": "identify",
        "email": "ana@acme.example",
        "first_name": "Ana",
        "locale": "en-GB",
        "time_zone": "Europe/Madrid",
        "plan": "pro",
        "mrr": 99.0,
        "currency": "EUR",
        "consent": {"email_marketing": True, "in_app": True},
        "owner_csm": {"id": "csm-1", "email": "csm1@tenure.example"},
    },
    "intent": {
        "event_id": "evt_intent_1",
        "customer_id": "acme-42",
        "occurred_at": "2026-11-20T10:15:00Z",
        "kind": "intent",
        "type": "competitor_trial",
        "source": "g2",
    },
}
"""One valid example of every kind: used in the OpenAPI docs and as test fixtures."""

REDEMPTION_EXAMPLE: dict[str, Any] = {
    "event_id": "evt_redeem_1",
    "customer_id": "acme-42",
    "occurred_at": "2026-11-20T10:15:00Z",
    "kind": "usage",
    "type": "reward_redeemed",
    "user_id": "u-7",
    "reward": "training",
}
"""A loyalty redemption (a ``usage`` type): the customer spent points on a reward."""
