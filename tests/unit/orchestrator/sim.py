"""One customer's life on a fake clock, run by the orchestrator's own use cases.

:class:`Sim` drives the production service layer (the message handlers, the timer
worker's ``fire_batch``, the held-trigger firing, the operator actions) on the in-memory
journey store (:mod:`orchestrator.adapters.memory`) and a :class:`~common.clock.FakeClock`,
the way the integration tests drive it on PostgreSQL: each fact is turned into the
message the orchestrator would consume, and time moves from one due instant to the next,
firing what is due there. :attr:`Sim.log` reads the journeys' history.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from common.clock import FakeClock
from common.events import parse_event
from common.messages import Delivery, ScoreSnapshot, SignalChange
from orchestrator.adapters.memory import MemoryStores
from orchestrator.domain import decisions as D
from orchestrator.domain import rules as R
from orchestrator.domain.journey import Event, Journey
from orchestrator.domain.playbook import Playbook
from orchestrator.service_layer import operator
from orchestrator.service_layer.context import Context
from orchestrator.service_layer.journeys import apply_fact, fire_due_triggers
from orchestrator.service_layer.messages import Message, handle
from orchestrator.service_layer.ports import Lease
from orchestrator.service_layer.steps import fire_batch

EntryKind = Literal[
    "start", "sent", "skipped", "deferred", "exit", "finish", "pause", "resume", "cancel"
]
KINDS: dict[Event, EntryKind] = {
    Event.START: "start",
    Event.STEP_SENT: "sent",
    Event.STEP_SKIPPED: "skipped",
    Event.STEP_DEFERRED: "deferred",
    Event.EXIT: "exit",
    Event.FINISH: "finish",
    Event.PAUSE: "pause",
    Event.RESUME: "resume",
    Event.CANCEL: "cancel",
}
# How a start says what triggered it: its trigger fired after a hold, or after a block.
STARTS = {"signal_held": "held", "signal_postponed": "postponed"}
LOGINS = ("login", "session_started")
NEUTRAL_CHURN = 0.5  # a score fact without a churn probability: neither starts nor exits


@dataclass(frozen=True)
class Entry:
    """One line of what happened: when, which playbook, what, which step, why."""

    at: datetime
    playbook: str
    kind: EntryKind
    step: str | None = None
    reason: str | None = None
    journey_id: str = ""


class Sim:
    """``playbooks`` shipped, one ``customer`` as the rules see it at ``now``."""

    def __init__(
        self,
        playbooks: dict[str, Playbook],
        customer: R.Customer,
        rules: R.Rules,
        now: datetime,
    ) -> None:
        self.stores = MemoryStores()
        self.clock = FakeClock(now)
        self.context = Context(playbooks=playbooks, rules=rules, clock=self.clock)
        self.customer_id = customer.customer_id
        self.lease = Lease(owner="sim", seconds=30.0, max_attempts=5)
        self.batch = 50  # timers a claim takes (and triggers a round fires)
        self._seed(customer, now)

    def _seed(self, customer: R.Customer, now: datetime) -> None:
        tables = self.stores.tables
        tables.profiles[customer.customer_id] = {
            "customer_id": customer.customer_id,
            "email": customer.email,
            "first_name": None,
            "time_zone": customer.time_zone,
            "plan": customer.plan,
            "consent_email": customer.consent_email,
            "consent_in_app": customer.consent_in_app,
            "owner_csm_email": None,
            "profile_at": now - timedelta(days=1),
        }
        tables.states[customer.customer_id] = {
            "segment": customer.segment,
            "loyalty_tier": None,
            "plan": None,
            "plan_at": None,
            "unsubscribed_at": now - timedelta(days=1) if customer.unsubscribed else None,
            "subscription": customer.subscription,
            "subscription_at": None,
            "products": sorted(customer.products),
        }
        if customer.tier is not None:
            tables.scores[customer.customer_id] = {
                "tier": customer.tier,
                "as_of": now - timedelta(days=1),
            }

    @property
    def now(self) -> datetime:
        return self.clock.now()

    # -- input --------------------------------------------------------------------------
    async def receive(self, fact: D.Fact, *, late: bool = False) -> None:
        """Live until the fact's instant, then handle the message it is (``late``: at the
        clock's instant, with what is due until then not fired yet)."""
        if not late:
            await self.advance_to(fact.at)
        if isinstance(fact, D.JourneyEndFact):  # no message says it: the use case directly
            async with self.stores.begin() as store:
                await apply_fact(self.customer_id, fact, store=store, context=self.context)
            return
        await handle(self.message(fact), stores=self.stores, context=self.context)

    def message(self, fact: D.Fact) -> Message:
        customer = self.customer_id
        if isinstance(fact, D.SignalFact):
            change = "signal_on" if fact.on else "signal_off"
            return SignalChange(
                customer_id=customer, occurred_at=fact.at, change=change, name=fact.name
            )
        if isinstance(fact, D.ScoreFact):
            values = fact.values
            return ScoreSnapshot(
                customer_id=customer,
                as_of=fact.at,
                risk_score=values.get("risk_score", 10),
                tier=fact.tier or "low",  # type: ignore[arg-type]
                churn_probability=values.get("churn_probability", NEUTRAL_CHURN),
                feature_adoption=values.get("feature_adoption"),
                health_score=values.get("health_score"),
            )
        if isinstance(fact, D.EventFact):
            fields: dict[str, Any] = {
                "event_id": str(uuid.uuid4()),
                "customer_id": customer,
                "occurred_at": fact.at.isoformat(),
                "type": fact.type,
            }
            if fact.type in LOGINS:
                return parse_event({**fields, "kind": "login", "user_id": "u"})  # type: ignore[return-value]
            extra = {k: v for k, v in (("plan", fact.plan), ("product", fact.product)) if v}
            return parse_event({**fields, "kind": "payment", **extra})  # type: ignore[return-value]
        assert isinstance(fact, D.DeliveryFact)
        step = self.step_of(fact.journey_id, fact.notification_id)
        return Delivery(
            notification_id=fact.notification_id or str(uuid.uuid4()),
            customer_id=customer,
            journey_id=fact.journey_id,
            step=step,
            channel="email",
            status=fact.status,  # type: ignore[arg-type]
            occurred_at=fact.at,
        )

    def step_of(self, journey_id: str | None, notification_id: str | None) -> str | None:
        """The step a notification id names (ids are made from the journey and step)."""
        if journey_id is None or notification_id is None:
            return None
        row = self.stores.tables.journeys.get(journey_id)
        if row is None:
            return None
        for step in self.context.playbooks[row.playbook].steps:
            if D.notification_id(journey_id, step.id) == notification_id:
                return step.id
        return None

    async def advance_to(self, instant: datetime) -> None:
        """Fire every held trigger and due step up to ``instant``, one due instant after
        the other, as the workers would."""
        for _ in range(100_000):
            due = self.stores.next_due()
            if due is None or due > instant:
                break
            self.clock.set(max(self.now, due))
            await self.fire_all()
        else:
            raise RuntimeError("something stays due and never fires")
        self.clock.set(max(self.now, instant))

    async def fire_all(self) -> None:
        while await fire_due_triggers(stores=self.stores, context=self.context, limit=self.batch):
            pass
        while await fire_batch(
            stores=self.stores, context=self.context, lease=self.lease, limit=self.batch
        ):
            pass

    async def operator(self, journey_id: str, action: Event) -> Journey:
        """Pause, resume or cancel a journey as the operator API does."""
        act = {
            Event.PAUSE: operator.pause_journey,
            Event.RESUME: operator.resume_journey,
            Event.CANCEL: operator.cancel_journey,
        }[action]
        return await act(journey_id, stores=self.stores, context=self.context)

    async def pause_playbook(self, name: str) -> None:
        await operator.pause_playbook(name, stores=self.stores, context=self.context)

    async def resume_playbook(self, name: str) -> None:
        await operator.resume_playbook(name, stores=self.stores, context=self.context)

    # -- what happened ------------------------------------------------------------------
    @property
    def log(self) -> list[Entry]:
        tables = self.stores.tables
        entries = []
        for change in tables.history:
            kind = KINDS[change.event]
            detail = change.detail
            reason = detail.get("reason")
            if kind == "start":
                reason = STARTS.get(str(detail.get("trigger")), "start")
            elif kind in ("finish", "pause", "resume", "sent"):
                reason = None
            playbook = tables.journeys[change.journey_id].playbook
            step = detail.get("step")
            entries.append(Entry(change.at, playbook, kind, step, reason, change.journey_id))
        return entries

    @property
    def armed(self) -> dict[str, tuple[datetime, str]]:
        """Playbook -> (when its held trigger fires, its signal)."""
        return {
            x.playbook: (x.due_at, x.signal)
            for x in self.stores.tables.triggers.values()
            if x.status == "pending" and x.due_at is not None and x.blocked_by is None
        }

    @property
    def blocked(self) -> dict[str, tuple[str, str]]:
        """Playbook -> (what its postponed trigger waits for, its signal)."""
        return {
            x.playbook: (x.blocked_by, x.signal)
            for x in self.stores.tables.triggers.values()
            if x.status == "pending" and x.blocked_by is not None
        }
