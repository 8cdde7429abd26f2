"""A group of due steps in memory (:class:`ports.Steps`): the reads and the write as of
one snapshot, as the SQL statements do them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from orchestrator.adapters.memory.customers import MemoryCustomers
from orchestrator.adapters.memory.journeys import waiting_later
from orchestrator.adapters.memory.tables import PENDING, STEP_EVENTS, MessageRow, Tables
from orchestrator.domain import rules as R
from orchestrator.domain.journey import Event, Journey, State
from orchestrator.domain.story import StepRecord, message_record
from orchestrator.service_layer.ports import (
    CustomerFacts,
    DueStep,
    Lease,
    LiveJourney,
    StepWrites,
    WaitingStep,
)


class MemorySteps:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def take(self, lease: Lease, ids: Sequence[int]) -> list[DueStep]:
        rows = [self.t.timers[i] for i in ids if i in self.t.timers]
        mine = [t for t in rows if t.lease_owner == lease.owner and t.status == PENDING]
        journeys: dict[str, Journey] = {}
        taken = []
        for timer in sorted(mine, key=lambda t: (t.due_at, t.id)):
            journey = journeys.get(timer.journey_id)
            if journey is None:
                journey = journeys[timer.journey_id] = self.t.journeys[timer.journey_id].journey()
            assert timer.due_at is not None
            taken.append(DueStep(timer.id, timer.step, timer.due_at, timer.waiting_since, journey))
        return taken

    async def record_failure(self, lease: Lease, timer_id: int, error: str) -> bool:
        timer = self.t.timers.get(timer_id)
        if timer is None or timer.lease_owner != lease.owner or timer.status != PENDING:
            return False
        timer.last_error = error[:2000]
        if timer.attempts >= lease.max_attempts:
            timer.status = "failed"
        return timer.status == "failed"

    async def lock_caps(self, customer_ids: Iterable[str]) -> None:
        return None  # one caller at a time

    async def gather(
        self, customer_ids: Iterable[str], *, cap_since: datetime, now: datetime
    ) -> tuple[dict[str, CustomerFacts], frozenset[str]]:
        t = self.t
        fired: dict[str, int] = {}
        for customer_id in customer_ids:
            fired[customer_id] = fired.get(customer_id, 0) + 1
        found = {}
        for customer_id in sorted(fired):
            profile = t.profiles.get(customer_id)
            score = t.scores.get(customer_id)
            journeys = sorted(
                (j for j in t.customer_journeys(customer_id) if j.ended_at is None),
                key=lambda j: (j.started_at, j.journey_id),
            )
            live = [
                LiveJourney(j.journey_id, j.playbook, len(t.pending_timers(j.journey_id)))
                for j in journeys
            ]
            waiting = []
            if sum(j.pending for j in live) > fired[customer_id]:
                waiting = [
                    WaitingStep(
                        timer.id,
                        j.journey_id,
                        j.playbook,
                        timer.step,
                        timer.waiting_since or timer.due_at,  # type: ignore[arg-type]
                        timer.waiting_since is not None,
                    )
                    for j in journeys
                    if j.state is State.ACTIVE and j.arm == "treatment"
                    for timer in t.pending_timers(j.journey_id)
                    if (timer.due_at is not None and timer.due_at <= now)
                    or timer.waiting_since is not None
                ]
                waiting.sort(key=lambda w: w.timer_id)
            found[customer_id] = CustomerFacts(
                customer=await MemoryCustomers(t).get(customer_id),
                profile={
                    k: profile.get(k)
                    for k in (
                        "customer_id",
                        "email",
                        "first_name",
                        "time_zone",
                        "plan",
                        "owner_csm_email",
                        "consent_email",
                        "consent_in_app",
                        "profile_at",
                    )
                }
                if profile
                else {},
                score=score["snapshot"] if score else None,
                sent=[
                    m.counts_at
                    for m in t.messages.values()
                    if m.customer_id == customer_id
                    and m.counts_at is not None
                    and m.counts_at > cap_since
                ],
                live=live,
                waiting=waiting,
                postponed=any(
                    x.customer_id == customer_id
                    and x.status == PENDING
                    and x.blocked_by == R.RETENTION_FIRST
                    for x in t.triggers.values()
                ),
            )
        return found, frozenset(t.paused)

    async def stories(self, journey_ids: Iterable[str]) -> dict[str, dict[str, StepRecord]]:
        t = self.t
        found: dict[str, dict[str, StepRecord]] = {j: {} for j in set(journey_ids)}
        for journey_id, records in found.items():
            for change in t.history:
                if change.journey_id != journey_id or change.event not in STEP_EVENTS:
                    continue
                step = str(change.detail.get("step"))
                if change.event is Event.STEP_SENT:
                    records.setdefault(step, StepRecord(step, "queued", change.at))
                else:
                    reason = change.detail.get("reason")
                    records[step] = StepRecord(step, "skipped", change.at, reason)
            for (jid, step), m in t.messages.items():
                if jid == journey_id:
                    records[step] = message_record(step, m.decided_at, m.outcome, m.outcome_at)
            for timer in t.pending_timers(journey_id):
                records[timer.step] = StepRecord(timer.step, "pending", timer.due_at)
        return found

    async def write(self, writes: StepWrites, now: datetime) -> None:
        t = self.t
        # As of one snapshot: the steps woken are those waiting before this write.
        woken = [timer for c in sorted(writes.woken) for timer in waiting_later(t, c, now)]
        t.outbox += writes.outbox
        t.history += writes.changes
        for timer_id in writes.fired:
            t.timers[timer_id].status, t.timers[timer_id].fired_at = "fired", now
        for timer_id in writes.cancelled:
            t.timers[timer_id].status = "cancelled"
        for timer_id, until, since in writes.deferred:
            timer = t.timers[timer_id]
            timer.due_at, timer.lease_owner = until, None
            timer.waiting_since = timer.waiting_since or since
        for journey_id in writes.finished:
            row = t.journeys[journey_id]
            row.state, row.ended_at, row.exit_reason = State.COMPLETED, now, "completed"
        for change in writes.changes:
            detail = change.detail
            if change.event is Event.STEP_SENT and detail.get("channel") != "webhook":
                key = (change.journey_id, str(detail["step"]))
                if key not in t.messages:
                    marketing = bool(detail.get("marketing"))
                    customer = t.journeys[change.journey_id].customer_id
                    t.messages[key] = MessageRow(
                        *key,
                        customer,
                        marketing,
                        change.at,
                        counts_at=change.at if marketing else None,
                    )
        for journey_id, step, due in writes.scheduled:
            for timer in t.pending_timers(journey_id):
                if timer.step == step:
                    timer.due_at = due
        for timer in woken:
            timer.due_at = now
        for trigger in t.triggers.values():
            if (
                trigger.customer_id in writes.lifted
                and trigger.status == PENDING
                and trigger.blocked_by == R.RETENTION_FIRST
            ):
                trigger.blocked_by, trigger.due_at = None, now
