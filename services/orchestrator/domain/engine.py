"""A pure, in-memory orchestrator for one customer: plays journeys through facts and time.

It composes the same functions as the PostgreSQL-backed service (trigger_effect,
start_block, exit_reason, decide_step and the journey machine), with the clock
moved by the caller. Tests use it to live through a playbook's whole timeline in
microseconds; it is also the model the hypothesis stateful test checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

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
    # pending step -> due (None: timed from a step not sent yet)
    timers: dict[str, datetime | None] = field(default_factory=dict)
    waiting: dict[str, datetime] = field(default_factory=dict)  # deferred for a slot -> since
    seen: set[str] = field(default_factory=set)
    ended_at: datetime | None = None
    exit_reason: str | None = None
    sent: list[tuple[str, datetime]] = field(default_factory=list)


@dataclass
class Message:
    """A notification a step asked for, and the outcome the notifier reported."""

    journey_id: str
    step: str
    marketing: bool
    decided_at: datetime
    outcome: str | None = None
    outcome_at: datetime | None = None

    @property
    def counts_at(self) -> datetime | None:
        return (
            R.counts_at(self.decided_at, self.outcome, self.outcome_at) if self.marketing else None
        )


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
        # playbook -> (when its held trigger fires, its signal)
        self.armed: dict[str, tuple[datetime, str]] = {}
        # playbook -> (what its postponed trigger waits for, its signal)
        self.blocked: dict[str, tuple[str, str]] = {}
        self.paused_playbooks: set[str] = set()
        self.messages: dict[str, Message] = {}  # by notification id

    # -- queries ------------------------------------------------------------------------
    def live(self, name: str) -> Journey | None:
        return next((j for j in self.journeys if j.playbook.name == name and j.state in LIVE), None)

    def live_lanes(self, but: Journey | None = None) -> frozenset[str]:
        return frozenset(j.playbook.lane for j in self.journeys if j.state in LIVE and j is not but)

    def last_ended_at(self, name: str) -> datetime | None:
        ends = [j.ended_at for j in self.journeys if j.playbook.name == name and j.ended_at]
        return max(ends) if ends else None

    @property
    def marketing_sent(self) -> list[datetime]:
        """When the frequency cap counts the customer's marketing messages."""
        return [t for m in self.messages.values() if (t := m.counts_at) is not None]

    def waiting(self) -> list[D.Waiting]:
        """The customer's marketing steps waiting for a cap slot: due, or deferred by the
        cap, in its active treatment-arm journeys (a paused or control-arm journey takes
        no slot)."""
        found = []
        for j in self._running():
            if j.arm != D.TREATMENT:
                continue
            for step_id, due in j.timers.items():
                if due is None or not j.playbook.step(step_id).marketing:
                    continue
                if step_id in j.waiting or due <= self.now:
                    since = j.waiting.get(step_id, due)
                    found.append(D.Waiting((j.journey_id, step_id), j.playbook.priority, since))
        return found

    # -- input --------------------------------------------------------------------------
    def receive(self, fact: D.Fact) -> None:
        """Process one fact at its instant (the engine's clock first moves there)."""
        self.advance_to(fact.at)
        self._update_customer(fact)
        if isinstance(fact, D.DeliveryFact):
            self._note_delivery(fact)
        for journey in [j for j in self.journeys if j.state in LIVE]:
            if journey.state not in LIVE:  # ended meanwhile, by what an earlier exit chained
                continue
            seen = D.observed(journey.playbook, fact, journey.journey_id)
            if seen:
                journey.seen.add(seen)
            reason = D.exit_reason(journey.playbook, fact, journey.journey_id)
            if reason:
                self._end(journey, Event.EXIT, reason)
        for book in sorted(self.playbooks.values(), key=lambda b: -b.priority):
            effect = D.trigger_effect(book, fact)
            if effect == "start":
                block = self._try_start(book, str(effect))
                hold = D.postpone_reason(book, block)
                if hold and isinstance(fact, D.SignalFact):
                    self.blocked[book.name] = (hold, fact.name)
            elif effect == "arm" and isinstance(fact, D.SignalFact):
                if book.name not in self.armed and book.name not in self.blocked:
                    hold = D.arm_block(book, self.customer)
                    if hold:
                        self.blocked[book.name] = (hold, fact.name)
                    else:
                        self.armed[book.name] = (fact.at + D.held_for(book), fact.name)
            elif effect == "disarm" and isinstance(fact, D.SignalFact):
                for triggers in (self.armed, self.blocked):
                    if book.name in triggers and triggers[book.name][1] == fact.name:
                        del triggers[book.name]
        if isinstance(fact, D.EventFact) and fact.type in R.SUBSCRIPTION_STATES:
            self._subscription_changed()
        if isinstance(fact, D.ScoreFact):
            self._lift_retention_first()

    def advance_to(self, instant: datetime) -> None:
        """Fire every armed trigger and due step up to ``instant``, in time order."""
        while True:
            due = self._next_due()
            if due is None or due[0] > instant:
                break
            at, kind, *_, name, step = due
            self.now = max(self.now, at)
            if kind == 0:
                self._fire_trigger(self.playbooks[name])
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
    def _running(self) -> list[Journey]:
        """Active journeys whose playbook is not paused (their steps fire)."""
        return [
            j
            for j in self.journeys
            if j.state is State.ACTIVE and j.playbook.name not in self.paused_playbooks
        ]

    def _next_due(self) -> tuple[Any, ...] | None:
        """The next thing to fire. At one instant: held triggers first (higher priority
        first), then steps by playbook priority (higher first), the step waiting longest,
        then in the order their journeys started and their playbook lists them (the order
        in which the service's timer rows were written). The service fires a group of
        due timers in the same order."""
        candidates: list[tuple[Any, ...]] = [
            (at, 0, -self.playbooks[name].priority, at, 0, 0, name, None)
            for name, (at, _) in self.armed.items()
        ]
        for index, j in enumerate(self.journeys):
            if j.state is not State.ACTIVE or j.playbook.name in self.paused_playbooks:
                continue
            order = {s.id: i for i, s in enumerate(j.playbook.steps)}
            for step, at in j.timers.items():
                if at is not None:
                    since = j.waiting.get(step, at)
                    rank = (-j.playbook.priority, since, index, order[step])
                    candidates.append((at, 1, *rank, j.playbook.name, step))
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

    def _note_delivery(self, fact: D.DeliveryFact) -> None:
        """A reported outcome settles where the message counts for the cap; one known not
        sent releases its slot, and the steps waiting for a slot are decided again now."""
        message = self.messages.get(fact.notification_id or "")
        if message is None:
            return
        outcome = R.outcome_after(message.outcome, fact.status)
        if outcome == message.outcome:
            return
        message.outcome, message.outcome_at = outcome, fact.at
        if outcome in R.NOT_SENT and message.marketing:
            self._wake()

    def _subscription_changed(self) -> None:
        """A cancellation suspends the held triggers of the playbooks a cancelled customer
        may not be in; a reactivation lets every trigger postponed by it count again."""
        if self.customer.subscription == "cancelled":
            pending = [*self.armed.items(), *self.blocked.items()]
            for name, (_, signal) in pending:
                if not self.playbooks[name].admits_cancelled:
                    self.armed.pop(name, None)
                    self.blocked[name] = (D.CANCELLED, signal)
            return
        for name, (why, signal) in list(self.blocked.items()):
            if why == D.CANCELLED:
                del self.blocked[name]
                self.armed[name] = (D.unblock_due(self.playbooks[name], why, self.now), signal)

    def _lift_retention_first(self) -> None:
        """Triggers postponed by retention before expansion are due now, once the risk
        tier is not high and no retention journey is live."""
        if R.retention_first("expansion", self.customer.tier, self.live_lanes()):
            return
        for name, (why, signal) in list(self.blocked.items()):
            if why == R.RETENTION_FIRST:
                del self.blocked[name]
                self.armed[name] = (D.unblock_due(self.playbooks[name], why, self.now), signal)

    def _wake(self) -> None:
        """The steps deferred for a cap slot are due now (a slot may be free for them)."""
        for j in self._running():
            for step_id in j.waiting:
                due = j.timers[step_id]
                if due is not None and due > self.now:
                    j.timers[step_id] = self.now

    def _fire_trigger(self, book: Playbook) -> None:
        """A trigger is due: start, or wait for a block to lift, or (held) check again."""
        _, signal = self.armed.pop(book.name)
        block = self._try_start(book, "held" if D.held_for(book) else "postponed")
        hold = D.postpone_reason(book, block)
        if hold:
            self.blocked[book.name] = (hold, signal)
        elif D.held_for(book) > timedelta(0):
            due = D.rearm_at(book, block, now=self.now, last_ended_at=self.last_ended_at(book.name))
            self.armed[book.name] = (due, signal)

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
        due = journey.timers[step_id]
        assert due is not None
        ahead = 0
        if step.marketing:
            me = D.Waiting(
                (journey.journey_id, step_id), book.priority, journey.waiting.get(step_id, due)
            )
            ahead = D.ahead_of(me, self.waiting())
        situation = D.Situation(
            customer=self.customer,
            arm=journey.arm,
            live_lanes=self.live_lanes(but=journey),
            marketing_sent=tuple(self.marketing_sent),
            seen=frozenset(journey.seen),
            ahead=ahead,
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
            if decision.reason in D.CAP_REASONS:
                journey.waiting.setdefault(step_id, due)
            self._note(journey, "deferred", step_id, decision.reason)
            return
        event = Event.STEP_SENT if decision.send else Event.STEP_SKIPPED
        journey.state = transition(journey.state, event, facts)
        del journey.timers[step_id]
        was_waiting = journey.waiting.pop(step_id, None) is not None
        if decision.send:
            journey.sent.append((step_id, self.now))
            key = D.notification_id(journey.journey_id, step_id)
            self.messages[key] = Message(journey.journey_id, step_id, step.marketing, self.now)
            self._note(journey, "sent", step_id)
        else:
            self._note(journey, "skipped", step_id, decision.reason)
            if was_waiting:
                self._wake()  # the slot it waited for goes to the next step waiting
        for follow, at in D.follow_ups(book, step_id, self.now):
            journey.timers[follow] = at
        if not journey.timers:
            journey.state = transition(journey.state, Event.FINISH, Facts(pending_steps=0))
            journey.ended_at = self.now
            journey.exit_reason = "completed"
            self._note(journey, "finish")
            self._lift_retention_first()

    def _end(self, journey: Journey, event: Event, reason: str) -> None:
        journey.state = transition(journey.state, event)
        journey.timers.clear()
        was_waiting = bool(journey.waiting)
        journey.waiting.clear()
        journey.ended_at = self.now
        journey.exit_reason = reason
        self._note(journey, "exit" if event is Event.EXIT else "cancel", reason=reason)
        if was_waiting:
            self._wake()
        self._lift_retention_first()
        if event is Event.EXIT:
            # Another playbook may be triggered by this outcome (e.g. re-engaged).
            self.receive(D.JourneyEndFact(journey.playbook.name, reason, self.now))

    def _note(
        self, journey: Journey, kind: EntryKind, step: str | None = None, reason: str | None = None
    ) -> None:
        self.log.append(
            Entry(self.now, journey.playbook.name, kind, step, reason, journey.journey_id)
        )
