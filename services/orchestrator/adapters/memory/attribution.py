"""Paused playbooks and attributed conversions in memory (:class:`ports.Pauses`,
:class:`ports.Attributions`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from orchestrator.adapters.memory.tables import STEP_EVENTS, Tables
from orchestrator.domain.attribution import Attribution, JourneySpan


class MemoryPauses:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def is_paused(self, playbook: str) -> bool:
        return playbook in self.t.paused

    async def pause(self, playbook: str, now: datetime, by: str) -> None:
        self.t.paused.setdefault(playbook, (now, by))

    async def resume(self, playbook: str) -> None:
        self.t.paused.pop(playbook, None)


class MemoryAttributions:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def journey_spans(
        self,
        customer_id: str,
        playbooks: Iterable[str],
        *,
        at: datetime,
        longest_window: timedelta,
    ) -> list[JourneySpan]:
        names = set(playbooks)
        spans = []
        for j in self.t.customer_journeys(customer_id):
            if j.playbook not in names or j.started_at > at:
                continue
            if j.ended_at is not None and j.ended_at < at - longest_window:
                continue
            steps = [
                c.at
                for c in self.t.history
                if c.journey_id == j.journey_id and c.event in STEP_EVENTS
            ]
            spans.append(
                JourneySpan(
                    journey_id=j.journey_id,
                    playbook=j.playbook,
                    started_at=j.started_at,
                    ended_at=j.ended_at,
                    last_step_at=max(steps, default=None),
                    arm=j.arm,
                    variant=j.variant,
                )
            )
        return spans

    async def record(self, customer_id: str, found: Iterable[Attribution]) -> list[Attribution]:
        recorded = []
        for attribution in found:
            key = (attribution.event_id, attribution.playbook)
            if key not in self.t.attributions:
                self.t.attributions[key] = (customer_id, attribution)
                recorded.append(attribution)
        return recorded
