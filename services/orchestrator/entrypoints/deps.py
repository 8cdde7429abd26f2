from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from common.clock import Clock
from orchestrator.domain.playbook import Playbook


@dataclass(frozen=True)
class Deps:
    """What the orchestrator's entry points share, built once in bootstrap."""

    engine: AsyncEngine
    playbooks: dict[str, Playbook]
    clock: Clock
    topic_prefix: str
