"""The journey state machine, declared as data: states, transitions and guards.

An event not allowed in a state, or whose guard does not hold, raises
:class:`IllegalTransition`; nothing falls through. Final states absorb nothing.

A PAUSED journey (operator action) keeps its pending step timers: they wait, and
fire once it is resumed. A paused journey can still exit (its goal was reached) or
be cancelled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from orchestrator.domain.errors import OrchestratorError


class State(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    EXITED = "exited"
    CANCELLED = "cancelled"


class Event(StrEnum):
    START = "start"
    STEP_SENT = "step_sent"
    STEP_SKIPPED = "step_skipped"
    STEP_DEFERRED = "step_deferred"
    PAUSE = "pause"
    RESUME = "resume"
    FINISH = "finish"
    EXIT = "exit"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Facts:
    """What guards may look at: the journey's steps not yet fired (or deferred)."""

    pending_steps: int


class Guard(StrEnum):
    HAS_PENDING_STEP = "has_pending_step"
    NO_PENDING_STEP = "no_pending_step"


GUARDS: dict[Guard, Callable[[Facts], bool]] = {
    Guard.HAS_PENDING_STEP: lambda f: f.pending_steps > 0,
    Guard.NO_PENDING_STEP: lambda f: f.pending_steps == 0,
}


@dataclass(frozen=True)
class Transition:
    source: State | None
    event: Event
    target: State
    guard: Guard | None = None


TRANSITIONS: tuple[Transition, ...] = (
    Transition(None, Event.START, State.ACTIVE),
    Transition(State.ACTIVE, Event.STEP_SENT, State.ACTIVE, Guard.HAS_PENDING_STEP),
    Transition(State.ACTIVE, Event.STEP_SKIPPED, State.ACTIVE, Guard.HAS_PENDING_STEP),
    Transition(State.ACTIVE, Event.STEP_DEFERRED, State.ACTIVE, Guard.HAS_PENDING_STEP),
    Transition(State.ACTIVE, Event.FINISH, State.COMPLETED, Guard.NO_PENDING_STEP),
    Transition(State.ACTIVE, Event.EXIT, State.EXITED),
    Transition(State.ACTIVE, Event.CANCEL, State.CANCELLED),
    Transition(State.ACTIVE, Event.PAUSE, State.PAUSED),
    Transition(State.PAUSED, Event.RESUME, State.ACTIVE),
    Transition(State.PAUSED, Event.EXIT, State.EXITED),
    Transition(State.PAUSED, Event.CANCEL, State.CANCELLED),
)

_BY_KEY: dict[tuple[State | None, Event], Transition] = {
    (t.source, t.event): t for t in TRANSITIONS
}

FINAL = frozenset({State.COMPLETED, State.EXITED, State.CANCELLED})
LIVE = frozenset({State.ACTIVE, State.PAUSED})


class IllegalTransition(OrchestratorError):
    """``event`` is not allowed in ``state`` (or its guard does not hold)."""


def transition(state: State | None, event: Event, facts: Facts | None = None) -> State:
    """The state after ``event``; raises :class:`IllegalTransition` if it is not allowed.

    A guarded transition needs ``facts``; without them it raises too, so that a
    caller cannot skip a guard by forgetting it.
    """
    rule = _BY_KEY.get((state, event))
    if rule is None:
        raise IllegalTransition(f"{event.value} is not allowed in state {state}")
    if rule.guard is not None:
        if facts is None:
            raise IllegalTransition(f"{event.value} needs facts for guard {rule.guard.value}")
        if not GUARDS[rule.guard](facts):
            raise IllegalTransition(
                f"{event.value} in state {state}: guard {rule.guard.value} does not hold"
            )
    return rule.target


OperatorAction = Event  # PAUSE, RESUME or CANCEL

OPERATOR_ACTIONS = frozenset({Event.PAUSE, Event.RESUME, Event.CANCEL})


def operator_transition(state: State, action: Event) -> State:
    """What an operator's pause / resume / cancel does; raises :class:`IllegalTransition`."""
    if action not in OPERATOR_ACTIONS:
        raise IllegalTransition(f"{action.value} is not an operator action")
    return transition(state, action)


# --- the journey aggregate ---------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One line of a journey's history: ``event`` took it from ``before`` to ``after``."""

    journey_id: str
    before: State | None
    after: State
    event: Event
    at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Journey:
    """One customer's journey through one playbook: the aggregate the machine guards.

    Every change of state goes through :meth:`apply` (which raises
    :class:`IllegalTransition` and changes nothing when the machine forbids it) and is
    returned as the history line the store writes with the new state. The journey's
    pending steps are timers the store keeps beside it.
    """

    journey_id: str
    customer_id: str
    playbook: str
    state: State
    started_at: datetime
    arm: str = "treatment"
    variant: str | None = None
    seen: frozenset[str] = frozenset()
    paused_by: str | None = None
    # ingest instant of the event whose fact started it (domain/reaction.py); None: not
    # the reaction to an event, or paused since
    ingested_at: datetime | None = None

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def apply(
        self,
        event: Event,
        at: datetime,
        detail: Mapping[str, Any] | None = None,
        *,
        pending: int | None = None,
    ) -> Change:
        """Move the journey by ``event`` at ``at``; the history line. ``pending``: its
        steps not fired yet, for the guarded events (a step fired, the last one)."""
        facts = None if pending is None else Facts(pending_steps=pending)
        after = transition(self.state, event, facts)
        change = Change(self.journey_id, self.state, after, event, at, detail or {})
        self.state = after
        if event is Event.PAUSE:
            self.ingested_at = None  # what it sends after a resume is no reaction
        return change


def start(journey_id: str, at: datetime, detail: Mapping[str, Any]) -> Change:
    """The first line of a journey's history (it starts active)."""
    return Change(journey_id, None, transition(None, Event.START), Event.START, at, detail)
