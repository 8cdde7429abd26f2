"""Topic names: the one list of Tenure's Kafka topics (prefix from settings)."""

from __future__ import annotations

from enum import StrEnum

DLQ_SUFFIX = ".dlq"


class Topic(StrEnum):
    """Logical topic names; :func:`topic_name` adds the deployment's prefix."""

    EVENTS_USAGE = "events.usage"
    EVENTS_PAYMENT = "events.payment"
    EVENTS_LOGIN = "events.login"
    EVENTS_SUPPORT = "events.support"
    EVENTS_PROFILE = "events.profile"
    EVENTS_INTENT = "events.intent"
    SIGNALS = "signals"
    SCORES = "scores"
    NOTIFICATIONS = "notifications"
    DELIVERIES = "deliveries"
    # A customer's data was erased (orchestrator -> scoring): scoring drops its state.
    ERASURES = "erasures"

    @classmethod
    def events(cls) -> list[Topic]:
        return [t for t in cls if t.value.startswith("events.")]

    @property
    def compacted(self) -> bool:
        """Whether the topic keeps only the latest record per key."""
        return self is Topic.SCORES

    @property
    def retention_class(self) -> str:
        """Which retention setting the topic (and its DLQ) gets: ``events``, ``signals``
        (signals, erasures, and the DLQ of the compacted ``scores``), ``deliveries`` or
        ``notifications`` (``TENURE_TOPIC_RETENTION_<CLASS>_MS``)."""
        if self.value.startswith("events."):
            return "events"
        if self in (Topic.DELIVERIES, Topic.NOTIFICATIONS):
            return self.value
        return "signals"


def topic_name(topic: Topic, prefix: str) -> str:
    """The physical name of ``topic`` in a deployment with ``prefix``."""
    return f"{prefix}{topic.value}"


def dlq_name(physical_topic: str) -> str:
    """The dead-letter topic of a physical topic."""
    return f"{physical_topic}{DLQ_SUFFIX}"


def events_topic(kind: str) -> Topic:
    """The topic an event of ``kind`` (usage, payment, ...) is published on."""
    return Topic(f"events.{kind}")
