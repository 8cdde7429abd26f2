"""What a CSM task says about its journey: what was sent, when, and what is still pending.

A CSM task (a call about an offer, an escalation "no answer in 3 days") is only true if
it says what the customer actually got. Its notification carries the journey so far,
built here from plain records of the journey's other steps; the notifier's CSM-task
templates and the task's JSON body show it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from orchestrator.domain import rules as R
from orchestrator.domain.playbook import Playbook

Status = Literal["sent", "queued", "not_sent", "skipped", "pending"]


@dataclass(frozen=True)
class StepRecord:
    """Where one step of a journey stands.

    ``sent``: the notifier reported it sent (``at``: then). ``queued``: decided at ``at``,
    no outcome reported yet. ``not_sent``: the notifier could not send it (``reason``:
    failed, suppressed, bounced). ``skipped``: decided not to send at ``at`` (``reason``).
    ``pending``: not fired yet, due at ``at`` (None: it waits for the step it is timed
    from).
    """

    step: str
    status: Status
    at: datetime | None = None
    reason: str | None = None


def message_record(
    step: str, decided_at: datetime, outcome: str | None, outcome_at: datetime | None
) -> StepRecord:
    """The record of a step whose notification was made at ``decided_at``."""
    if outcome in R.NOT_SENT:
        return StepRecord(step, "not_sent", outcome_at, outcome)
    if outcome == R.SENT:
        return StepRecord(step, "sent", outcome_at or decided_at)
    return StepRecord(step, "queued", decided_at)


def journey_story(
    playbook: Playbook,
    records: Iterable[StepRecord],
    *,
    current: str,
    started_at: datetime,
) -> dict[str, Any]:
    """The journey so far, for the context of step ``current`` (a CSM task).

    ``steps`` lists the journey's other steps in the playbook's order, each with its
    channel, status, instant (ISO 8601) and reason; a step with no record is left out.
    ``sent``, ``not_sent`` and ``pending`` name the steps in each state, so that a
    template can say what the customer received and what is still to come.
    """
    by_step = {r.step: r for r in records}
    steps: list[dict[str, Any]] = []
    for step in playbook.steps:
        record = by_step.get(step.id)
        if step.id == current or record is None:
            continue
        reason = record.reason
        if record.status == "pending" and record.at is None and step.from_:
            reason = f"waits for {step.from_}"
        steps.append(
            {
                "step": step.id,
                "channel": step.channel,
                "status": record.status,
                "at": record.at.isoformat() if record.at else None,
                "reason": reason,
            }
        )
    return {
        "playbook": playbook.name,
        "started_at": started_at.isoformat(),
        "steps": steps,
        "sent": [s["step"] for s in steps if s["status"] in ("sent", "queued")],
        "not_sent": [s["step"] for s in steps if s["status"] in ("not_sent", "skipped")],
        "pending": [s["step"] for s in steps if s["status"] == "pending"],
    }
