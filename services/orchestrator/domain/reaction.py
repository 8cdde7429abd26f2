"""Which notifications are the immediate reaction to an event (the latency objective's).

A journey started by a fact that carries the ingest instant of the event behind it (a
score snapshot, a signal change or an event record with an ``ingested_at`` header) keeps
that instant. Its notification is the reaction to that event, and carries the instant on
to the notifier, when the step is due at the journey's start (``after: P0D``, not timed
from another step) and is sent when it first comes due. Everything else is sent later
by design and is not observed: a step with a delay or timed from another step, one
deferred by quiet hours or for a frequency-cap slot, one of a journey paused since
(:meth:`Journey.apply` forgets the instant on a pause), and every step of a journey
started by a held-signal trigger, a postponed trigger or an operator.
"""

from __future__ import annotations

from datetime import datetime

from orchestrator.domain.journey import Journey


def reaction_ingested_at(
    journey: Journey, *, due_at: datetime | None, waiting_since: datetime | None
) -> datetime | None:
    """The ingest instant the notification of a step of ``journey`` (its timer due at
    ``due_at``, waiting for a cap slot since ``waiting_since``) carries, or None when the
    send is not the immediate reaction to the event that started the journey."""
    if journey.ingested_at is None or waiting_since is not None:
        return None
    if due_at is None or due_at != journey.started_at:
        return None
    return journey.ingested_at
