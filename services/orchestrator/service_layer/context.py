"""What the use cases read besides the store: the shipped playbooks, the rules' numbers,
the clock ("now" always comes from it) and the topics they write to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.clock import Clock
from common.topics import Topic, topic_name
from orchestrator.domain.playbook import Playbook
from orchestrator.domain.rules import Rules


@dataclass(frozen=True)
class Context:
    playbooks: Mapping[str, Playbook]
    rules: Rules
    clock: Clock
    topic_prefix: str = ""
    default_currency: str = "EUR"  # of attributed revenue when a payment names none

    @property
    def notifications_topic(self) -> str:
        return topic_name(Topic.NOTIFICATIONS, self.topic_prefix)

    @property
    def erasures_topic(self) -> str:
        return topic_name(Topic.ERASURES, self.topic_prefix)
