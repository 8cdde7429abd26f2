from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from common.clock import Clock
from orchestrator.domain.playbook import Playbook
from orchestrator.domain.rules import Rules
from orchestrator.settings import OrchestratorSettings


def _default_rules() -> Rules:
    return OrchestratorSettings().rules()


def _default_currency() -> str:
    return OrchestratorSettings().default_currency


@dataclass(frozen=True)
class Deps:
    """What the orchestrator's entry points share, built once in bootstrap."""

    engine: AsyncEngine
    playbooks: dict[str, Playbook]
    clock: Clock
    topic_prefix: str
    rules: Rules = field(default_factory=_default_rules)  # the cross-playbook rules' numbers
    # of attributed revenue when a payment names none
    default_currency: str = field(default_factory=_default_currency)
