"""What the orchestrator's entry points share, built once in bootstrap."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy.ext.asyncio import AsyncEngine

from common.clock import Clock
from orchestrator.adapters.store import SqlStores
from orchestrator.domain.playbook import Playbook
from orchestrator.domain.rules import Rules
from orchestrator.service_layer.context import Context
from orchestrator.settings import OrchestratorSettings


def _default_rules() -> Rules:
    return OrchestratorSettings().rules()


def _default_currency() -> str:
    return OrchestratorSettings().default_currency


@dataclass(frozen=True)
class Deps:
    """The engine (read views, readiness, the relay), the journey store over it, and what
    the use cases read (:attr:`context`)."""

    engine: AsyncEngine
    playbooks: dict[str, Playbook]
    clock: Clock
    topic_prefix: str
    rules: Rules = field(default_factory=_default_rules)  # the cross-playbook rules' numbers
    # of attributed revenue when a payment names none
    default_currency: str = field(default_factory=_default_currency)

    @cached_property
    def stores(self) -> SqlStores:
        return SqlStores(self.engine)

    @cached_property
    def context(self) -> Context:
        return Context(
            playbooks=self.playbooks,
            rules=self.rules,
            clock=self.clock,
            topic_prefix=self.topic_prefix,
            default_currency=self.default_currency,
        )
