"""The journey state machine, declared as data: an illegal transition raises."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    EXITED = "exited"
    CANCELLED = "cancelled"


class Event(StrEnum):
    START = "start"
    STEP_SENT = "step_sent"
    STEP_SKIPPED = "step_skipped"
    FINISH = "finish"
    EXIT = "exit"
    CANCEL = "cancel"


TRANSITIONS: dict[tuple[State | None, Event], State] = {
    (None, Event.START): State.ACTIVE,
    (State.ACTIVE, Event.STEP_SENT): State.ACTIVE,
    (State.ACTIVE, Event.STEP_SKIPPED): State.ACTIVE,
    (State.ACTIVE, Event.FINISH): State.COMPLETED,
    (State.ACTIVE, Event.EXIT): State.EXITED,
    (State.ACTIVE, Event.CANCEL): State.CANCELLED,
}

FINAL = frozenset({State.COMPLETED, State.EXITED, State.CANCELLED})


class IllegalTransition(Exception):
    """``event`` is not allowed in ``state``."""


def transition(state: State | None, event: Event) -> State:
    """The state after ``event``; raises :class:`IllegalTransition` if it is not allowed."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"{event.value} is not allowed in state {state}") from None
