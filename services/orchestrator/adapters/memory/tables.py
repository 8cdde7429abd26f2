"""The fake's tables: plain rows, as PostgreSQL keeps them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.domain.attribution import Attribution, Payment
from orchestrator.domain.journey import Change, Event, Journey, State
from orchestrator.domain.movements import Movement, StateChange
from orchestrator.service_layer.ports import OutboxRow

PENDING = "pending"
STEP_EVENTS = (Event.STEP_SENT, Event.STEP_SKIPPED)
_STATE_COLUMNS = (
    "segment",
    "loyalty_tier",
    "plan",
    "plan_at",
    "unsubscribed_at",
    "subscription",
    "subscription_at",
    "products",
)


@dataclass
class JourneyRow:
    journey_id: str
    customer_id: str
    playbook: str
    state: State
    started_at: datetime
    arm: str
    variant: str | None
    seen: list[str] = field(default_factory=list)
    paused_by: str | None = None
    ended_at: datetime | None = None
    exit_reason: str | None = None
    ingested_at: datetime | None = None

    def journey(self) -> Journey:
        return Journey(
            journey_id=self.journey_id,
            customer_id=self.customer_id,
            playbook=self.playbook,
            state=self.state,
            started_at=self.started_at,
            arm=self.arm,
            variant=self.variant,
            seen=frozenset(self.seen),
            paused_by=self.paused_by,
            ingested_at=self.ingested_at,
        )


@dataclass
class TimerRow:
    id: int
    journey_id: str
    step: str
    due_at: datetime | None
    status: str = PENDING
    fired_at: datetime | None = None
    waiting_since: datetime | None = None
    lease_owner: str | None = None
    lease_round: int = 0
    attempts: int = 0
    last_error: str | None = None


@dataclass
class MessageRow:
    journey_id: str
    step: str
    customer_id: str
    marketing: bool
    decided_at: datetime
    outcome: str | None = None
    outcome_at: datetime | None = None
    counts_at: datetime | None = None


@dataclass
class TriggerRow:
    id: int
    customer_id: str
    playbook: str
    signal: str
    armed_at: datetime
    due_at: datetime | None
    status: str = PENDING
    blocked_by: str | None = None


@dataclass
class Tables:
    """Everything the fake keeps, as rows a test may read."""

    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    erasures: dict[str, datetime] = field(default_factory=dict)
    journeys: dict[str, JourneyRow] = field(default_factory=dict)
    history: list[Change] = field(default_factory=list)
    timers: dict[int, TimerRow] = field(default_factory=dict)
    messages: dict[tuple[str, str], MessageRow] = field(default_factory=dict)
    triggers: dict[int, TriggerRow] = field(default_factory=dict)
    paused: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    outbox: list[OutboxRow] = field(default_factory=list)
    attributions: dict[tuple[str, str], tuple[str, Attribution]] = field(default_factory=dict)
    subscription_log: dict[str, tuple[str, Payment]] = field(default_factory=dict)  # by event id
    subscriptions: dict[str, StateChange] = field(default_factory=dict)  # by event id
    movements: dict[str, Movement] = field(default_factory=dict)  # by event id
    serial: int = 0  # the last id given (journeys, timers, triggers)
    claims: int = 0  # claims made (a lease lasts one)

    def next_id(self) -> int:
        self.serial += 1
        return self.serial

    def customer_journeys(self, customer_id: str) -> list[JourneyRow]:
        return [j for j in self.journeys.values() if j.customer_id == customer_id]

    def pending_timers(self, journey_id: str) -> list[TimerRow]:
        return [
            t for t in self.timers.values() if t.journey_id == journey_id and t.status == PENDING
        ]
