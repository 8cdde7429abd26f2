"""Property-based stateful test of the journeys (hypothesis), on the production use cases.

Any sequence of facts, clock advances and operator actions over every shipped
playbook, run by the orchestrator's service layer on the in-memory journey store
(``sim.Sim``), leaves each journey in a legal state; exits are final; no step is sent
after a journey ended or while it (or its playbook) is paused; at most one live
journey per playbook; and every recorded transition is one the machine declares.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orchestrator.domain import decisions as D
from orchestrator.domain import rules as R
from orchestrator.domain.journey import FINAL, LIVE, TRANSITIONS, Event, IllegalTransition, State
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.settings import OrchestratorSettings
from tests.unit.orchestrator.sim import Sim

T = TypeVar("T")

BOOKS = load_playbooks(SHIPPED)
RULES = OrchestratorSettings().rules()
T0 = datetime(2026, 3, 20, 18, 0, tzinfo=UTC)  # spans the Madrid DST change

SIGNALS = [
    "engagement_low",
    "usage_reduced",
    "power_user",
    "limit_reached",
    "limit_approaching",
    "roi_proven",
    "cross_sell_ready",
]
EVENTS = [
    "login",
    "subscription_started",
    "subscription_cancelled",
    "subscription_reactivated",
    "subscription_upgraded",
    "subscription_downgraded",
    "downgrade_requested",
    "purchase",
]
STATUSES = [
    "opened",
    "clicked",
    "replied",
    "unsubscribed",
    "read",
    "sent",
    "failed",
    "bounced",
    "suppressed",
]

# What an entry kind says about the journey's state afterwards.
ENDS = {"exit", "finish", "cancel"}


class JourneyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        customer = R.Customer(
            "acme-3",
            email="ana@acme.example",
            time_zone="Europe/Madrid",
            plan="basic",
            consent_email=True,
        )
        self.loop = asyncio.new_event_loop()
        self.sim = Sim(BOOKS, customer, RULES, T0)

    def teardown(self) -> None:
        self.loop.close()

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    @property
    def journeys(self) -> list[Any]:
        return list(self.sim.stores.tables.journeys.values())

    @rule(hours=st.integers(min_value=0, max_value=24 * 20))
    def advance(self, hours: int) -> None:
        self.run(self.sim.advance_to(self.sim.now + timedelta(hours=hours)))

    @rule(name=st.sampled_from(SIGNALS), on=st.booleans())
    def signal(self, name: str, on: bool) -> None:
        self.run(self.sim.receive(D.SignalFact(name, on, self.sim.now)))

    @rule(
        type_=st.sampled_from(EVENTS),
        plan=st.sampled_from([None, "basic", "pro"]),
        product=st.sampled_from([None, "course", "bundle"]),
    )
    def event(self, type_: str, plan: str | None, product: str | None) -> None:
        self.run(self.sim.receive(D.EventFact(type_, self.sim.now, plan, product)))

    @rule(status=st.sampled_from(STATUSES), pick=st.integers(min_value=0, max_value=50))
    def delivery(self, status: str, pick: int) -> None:
        # an outcome of one of the messages sent (the notifier's report), or of none
        sent = sorted(self.sim.stores.tables.messages)
        journey, key = (None, None)
        if sent:
            journey, step = sent[pick % len(sent)]
            key = D.notification_id(journey, step)
        self.run(self.sim.receive(D.DeliveryFact(status, self.sim.now, journey, key)))

    @rule(
        probability=st.floats(min_value=0, max_value=1),
        adoption=st.floats(min_value=0, max_value=1),
        tier=st.sampled_from(["low", "medium", "high"]),
    )
    def score(self, probability: float, adoption: float, tier: str) -> None:
        values = {"churn_probability": probability, "feature_adoption": adoption}
        self.run(self.sim.receive(D.ScoreFact(values, self.sim.now, tier)))

    @precondition(lambda self: any(j.state in LIVE for j in self.journeys))
    @rule(
        pick=st.integers(min_value=0, max_value=50),
        action=st.sampled_from([Event.PAUSE, Event.RESUME, Event.CANCEL]),
    )
    def operator(self, pick: int, action: Event) -> None:
        live = [j for j in self.journeys if j.state in LIVE]
        journey = live[pick % len(live)]
        before = journey.state
        legal = (before, action) in {
            (State.ACTIVE, Event.PAUSE),
            (State.PAUSED, Event.RESUME),
            (State.ACTIVE, Event.CANCEL),
            (State.PAUSED, Event.CANCEL),
        }
        if action is Event.RESUME and journey.playbook in self.sim.stores.tables.paused:
            legal = False  # resume the playbook first
        try:
            self.run(self.sim.operator(journey.journey_id, action))
        except IllegalTransition:
            assert not legal, (before, action)
            assert journey.state is before
        else:
            assert legal, (before, action)

    @rule(name=st.sampled_from(sorted(BOOKS)), pause=st.booleans())
    def pause_playbook(self, name: str, pause: bool) -> None:
        if pause:
            self.run(self.sim.pause_playbook(name))
        else:
            self.run(self.sim.resume_playbook(name))

    @invariant()
    def states_are_legal_and_final_states_hold_nothing(self) -> None:
        tables = self.sim.stores.tables
        live_per_book: dict[str, int] = {}
        for j in self.journeys:
            assert j.state in State
            if j.state in FINAL:
                assert not tables.pending_timers(j.journey_id)
                assert j.ended_at is not None and j.exit_reason
            else:
                assert j.ended_at is None
                live_per_book[j.playbook] = live_per_book.get(j.playbook, 0) + 1
        assert all(n == 1 for n in live_per_book.values())

    @invariant()
    def nothing_is_sent_after_an_end_or_while_paused(self) -> None:
        ended: set[str] = set()
        paused: set[str] = set()
        for entry in self.sim.log:
            jid = entry.journey_id
            if entry.kind == "start":
                assert jid not in ended
            elif entry.kind in ("sent", "skipped", "deferred"):
                assert jid not in ended, f"{entry} after the journey ended"
                assert jid not in paused, f"{entry} while paused"
            elif entry.kind == "pause":
                paused.add(jid)
            elif entry.kind == "resume":
                paused.discard(jid)
            if entry.kind in ENDS:
                assert jid not in ended, f"{jid} ended twice"
                ended.add(jid)
                paused.discard(jid)

    @invariant()
    def every_transition_is_one_the_machine_declares(self) -> None:
        for change in self.sim.stores.tables.history:
            assert (change.before, change.event) in DECLARED, change

    @invariant()
    def steps_are_sent_once_in_order_and_never_before_due(self) -> None:
        sent: dict[str, list[tuple[str, datetime]]] = {}
        for entry in self.sim.log:
            if entry.kind == "sent" and entry.step:
                sent.setdefault(entry.journey_id, []).append((entry.step, entry.at))
        for j in self.journeys:
            ids = [s for s, _ in sent.get(j.journey_id, [])]
            assert len(ids) == len(set(ids))
            for step_id, at in sent.get(j.journey_id, []):
                assert at >= j.started_at + BOOKS[j.playbook].step(step_id).after

    @invariant()
    def the_log_is_in_time_order(self) -> None:
        times = [e.at for e in self.sim.log]
        assert times == sorted(times)


DECLARED = {(t.source, t.event) for t in TRANSITIONS}

JourneyMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestJourneyMachine = JourneyMachine.TestCase
