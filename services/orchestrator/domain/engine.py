"""A pure, in-memory orchestrator for one customer: plays journeys through facts and time.

It composes the same functions as the PostgreSQL-backed service (trigger_effect,
start_block, exit_reason, decide_step and the journey machine), with the clock
moved by the caller. Tests use it to live through a playbook's whole timeline in
microseconds; it is also the model the hypothesis stateful test checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from orchestrator.domain import decisions as D
from orchestrator.domain import rules as R
from orchestrator.domain.journey import LIVE, Event, Facts, State, transition
from orchestrator.domain.playbook import Playbook

EntryKind = Literal[
    "start", "sent", "skipped", "deferred", "exit", "finish", "pause", "resume", "cancel"
]


@dataclass(frozen=True)
class Entry:
    """One line of what happened: when, which playbook, what, which step, why."""

    at: datetime
    playbook: str
    kind: EntryKind
    step: str | None = None
    reason: str | None = None
    journey_id: str = ""


@dataclass
class Journey:
    journey_id: str
    playbook: Playbook
    arm: str
    variant: str | None
    started_at: datetime
    state: State = State.ACTIVE
    timers: dict[str, datetime] = field(default_factory=dict)  # pending step -> due
    seen: set[str] = field(default_factory=set)
    ended_at: datetime | None = None
    exit_reason: str | None = None
    sent: list[tuple[str, datetime]] = field(default_factory=list)


class Engine:
    """Every playbook, one customer. Feed facts with :meth:`receive`, move time with
    :meth:`advance_to`; read :attr:`log`."""

    def __init__(
        self,
        playbooks: dict[str, Playbook],
        customer: R.Customer,
        rules: R.Rules,
        now: datetime,
    ) -> None:
        self.playbooks = playbooks
        self.customer = customer
        self.rules = rules
        self.now = now
        self.log: list[Entry] = []
        self.journeys: list[Journey] = []
        self.armed: dict[str, datetime] = {}  # playbook -> when its held trigger fires
        self.paused_playbooks: set[str] = set()
        self.marketing_sent: list[datetime] = []

    # -- queries ------------------------------------------------------------------------
    def live(self, name: str) -> Journey | None:
        return next((j for j in self.journeys if j.playbook.name == name and j.state in LIVE), None)

    def live_lanes(self, but: Journey | None = None) -> frozenset[str]:
        return frozenset(j.playbook.lane for j in self.journeys if j.state in LIVE and j is not but)

    def last_ended_at(self, name: str) -> datetime | None:
        ends = [j.ended_at for j in self.journeys if j.playbook.name == name and j.ended_at]
        return max(ends) if ends else None

    # -- input --------------------------------------------------------------------------
    def receive(self, fact: D.Fact) -> None:
        """Process one fact at its instant (the engine's clock first moves there)."""
        self.advance_to(fact.at)
        self._update_customer(fact)
        for journey in [j for j in self.journeys if j.state in LIVE]:
            seen = D.observed(journey.playbook, fact, journey.journey_id)
            if seen:
                journey.seen.add(seen)
            reason = D.exit_reason(journey.playbook, fact, journey.journey_id)
            if reason:
                self._end(journey, Event.EXIT, reason)
        for book in sorted(self.playbooks.values(), key=lambda b: -b.priority):
            effect = D.trigger_effect(book, fact)
            if effect == "start":
                self._try_start(book, str(effect))
            elif effect == "arm" and book.name not in self.armed:
                self.armed[book.name] = fact.at + D.held_for(book)
            elif effect == "disarm":
                self.armed.pop(book.name, None)

    def advance_to(self, instant: datetime) -> None:
        """Fire every armed trigger and due step up to ``instant``, in time order."""
        while True:
            due = self._next_due()
            if due is None or due[0] > instant:
                break
            at, kind, _, _, name, step = due
            self.now = max(self.now, at)
            if kind == 0:
                book = self.playbooks[name]
                block = self._try_start(book, "held")
                self.armed[name] = D.rearm_at(
                    book, block, now=self.now, last_ended_at=self.last_ended_at(name)
                )
            else:
                journey = self.live(name)
                assert journey is not None and step is not None
                self._fire(journey, step)
        self.now = max(self.now, instant)

    def pause_playbook(self, name: str) -> None:
        self.paused_playbooks.add(name)

    def resume_playbook(self, name: str) -> None:
        self.paused_playbooks.discard(name)

    def operator(self, name: str, action: Event) -> None:
        """Pause, resume or cancel the live journey of ``name`` (raises if illegal)."""
        journey = self.live(name)
        if journey is None:
            raise LookupError(f"no live {name} journey")
        if action is Event.CANCEL:
            self._end(journey, Event.CANCEL, "operator")
            return
        journey.state = transition(journey.state, action)
        self._note(journey, "pause" if action is Event.PAUSE else "resume")

    # -- internals ----------------------------------------------------------------------
    def _next_due(self) -> tuple[datetime, int, int, int, str, str | None] | None:
        """The next thing to fire. At one instant: held triggers first, then steps in the
        order their journeys started and their playbook lists them (the order in which
        the service's timer rows were written, which is the order it fires them in)."""
        candidates: list[tuple[datetime, int, int, int, str, str | None]] = [
            (at, 0, -self.playbooks[name].priority, 0, name, None)
            for name, at in self.armed.items()
        ]
        for index, j in enumerate(self.journeys):
            if j.state is State.ACTIVE and j.playbook.name not in self.paused_playbooks:
                order = {s.id: i for i, s in enumerate(j.playbook.steps)}
                for step, at in j.timers.items():
                    candidates.append((at, 1, index, order[step], j.playbook.name, step))
        return min(candidates, default=None)

    def _update_customer(self, fact: D.Fact) -> None:
        c = self.customer
        if isinstance(fact, D.DeliveryFact) and fact.status == "unsubscribed":
            c = replace(c, unsubscribed=True)
        elif isinstance(fact, D.ScoreFact) and fact.tier is not None:
            c = replace(c, tier=fact.tier)
        elif isinstance(fact, D.EventFact):
            if fact.plan and fact.type in ("subscription_upgraded", "subscription_downgraded"):
                c = replace(c, plan=fact.plan)
            if fact.type == "purchase" and fact.product:
                c = replace(c, products=c.products | {fact.product})
            if fact.type in R.SUBSCRIPTION_STATES:
                c = replace(c, subscription=R.SUBSCRIPTION_STATES[fact.type])
        self.customer = c

    def _try_start(self, book: Playbook, why: str) -> str | None:
        """Start a journey of ``book`` unless a rule blocks it; the block, or None."""
        live = self.live(book.name)
        block = D.start_block(
            book,
            self.customer,
            live_lanes=self.live_lanes(),
            last_ended_at=self.last_ended_at(book.name),
            has_live_journey=live is not None,
            paused=book.name in self.paused_playbooks,
            now=self.now,
        )
        if block:
            return block
        journey = Journey(
            journey_id=f"{book.name}-{len(self.journeys) + 1}",
            playbook=book,
            arm=D.assign_arm(book, self.customer.customer_id),
            variant=D.pick_variant(book, self.customer.customer_id),
            started_at=self.now,
            state=transition(None, Event.START),
            timers=dict(D.schedule(book, self.now)),
        )
        self.journeys.append(journey)
        self._note(journey, "start", reason=why)
        return None

    def _fire(self, journey: Journey, step_id: str) -> None:
        book = journey.playbook
        step = book.step(step_id)
        situation = D.Situation(
            customer=self.customer,
            arm=journey.arm,
            live_lanes=self.live_lanes(but=journey),
            marketing_sent=tuple(self.marketing_sent),
            seen=frozenset(journey.seen),
        )
        decision = D.decide_step(book, step, situation, now=self.now, rules=self.rules)
        facts = Facts(pending_steps=len(journey.timers))
        if decision.action == "exit":
            self._end(journey, Event.EXIT, decision.reason or "wait")
            return
        if decision.action == "defer":
            assert decision.until is not None
            journey.state = transition(journey.state, Event.STEP_DEFERRED, facts)
            journey.timers[step_id] = decision.until
            self._note(journey, "deferred", step_id, decision.reason)
            return
        event = Event.STEP_SENT if decision.send else Event.STEP_SKIPPED
        journey.state = transition(journey.state, event, facts)
        del journey.timers[step_id]
        if decision.send:
            journey.sent.append((step_id, self.now))
            if step.marketing:
                self.marketing_sent.append(self.now)
            self._note(journey, "sent", step_id)
        else:
            self._note(journey, "skipped", step_id, decision.reason)
        if not journey.timers:
            journey.state = transition(journey.state, Event.FINISH, Facts(pending_steps=0))
            journey.ended_at = self.now
            journey.exit_reason = "completed"
            self._note(journey, "finish")

    def _end(self, journey: Journey, event: Event, reason: str) -> None:
        journey.state = transition(journey.state, event)
        journey.timers.clear()
        journey.ended_at = self.now
        journey.exit_reason = reason
        self._note(journey, "exit" if event is Event.EXIT else "cancel", reason=reason)
        if event is Event.EXIT:
            # Another playbook may be triggered by this outcome (e.g. re-engaged).
            self.receive(D.JourneyEndFact(journey.playbook.name, reason, self.now))

    def _note(
        self, journey: Journey, kind: EntryKind, step: str | None = None, reason: str | None = None
    ) -> None:
        self.log.append(
            Entry(self.now, journey.playbook.name, kind, step, reason, journey.journey_id)
        )
