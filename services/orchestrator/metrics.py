"""Every metric of the orchestrator, declared once."""

from common.metrics import (
    LagGauge,
    build_info,
    consumer_dead_letters,
    consumer_lag,
    counter,
    gauge,
    histogram,
)

SERVICE = "orchestrator"

BUILD_INFO = build_info(SERVICE)
CONSUMER_LAG = consumer_lag(SERVICE)
report_lag = LagGauge(CONSUMER_LAG)
"""The ``report_lag`` of the orchestrator's consumers (``common.kafka.run_consumer``)."""
CONSUMER_DEAD_LETTERS = consumer_dead_letters(SERVICE)
GROUP_LAG = gauge(
    SERVICE,
    "group_lag",
    "Records on a partition not yet processed by a consumer group, measured from outside the "
    "group (committed offset vs end offset) for TENURE_ORCHESTRATOR_WATCHED_GROUPS: still "
    "there when every member is down. 0 where only transaction markers wait.",
    ["group", "topic", "partition"],
    multiprocess_mode="max",
)
report_group_lag = LagGauge(GROUP_LAG)
GROUP_OLDEST_UNCONSUMED_SECONDS = gauge(
    SERVICE,
    "group_oldest_unconsumed_seconds",
    "Real seconds since the oldest record a consumer group has not processed was produced "
    "(its Kafka timestamp, read at the group's committed offset), per partition of "
    "TENURE_ORCHESTRATOR_WATCHED_GROUPS; 0 on a partition without lag, absent where the "
    "record could not be read. Measured from outside the group, with group_lag.",
    ["group", "topic", "partition"],
    multiprocess_mode="max",
)
report_group_oldest = LagGauge(GROUP_OLDEST_UNCONSUMED_SECONDS)


def dead_lettered(topic: str) -> None:
    """The ``on_sent`` of the service's ``common.kafka.DeadLetters``."""
    CONSUMER_DEAD_LETTERS.labels(topic=topic).inc()


TIMERS_DUE = gauge(
    SERVICE,
    "timers_due",
    "Pending timers whose due instant has passed and that have not fired (a timer worker "
    "keeping up shows a few at most).",
    multiprocess_mode="max",
)
TIMERS_OLDEST_DUE_SECONDS = gauge(
    SERVICE,
    "timers_oldest_due_seconds",
    "Real seconds since the oldest due, unfired timer came due (0: none due).",
    multiprocess_mode="max",
)
OUTBOX_PENDING = gauge(
    SERVICE,
    "outbox_pending",
    "Outbox rows written and not yet published to Kafka by the relay.",
    multiprocess_mode="max",
)
OUTBOX_OLDEST_SECONDS = gauge(
    SERVICE,
    "outbox_oldest_seconds",
    "Real seconds since the oldest unpublished outbox row was written (0: none waits).",
    multiprocess_mode="max",
)
JOURNEYS_LIVE = gauge(
    SERVICE,
    "journeys_live",
    "Journeys started and not ended, by playbook and state.",
    ["playbook", "state"],
    multiprocess_mode="max",
)

JOURNEYS_STARTED = counter(
    SERVICE, "journeys_started", "Journeys started, by playbook.", ["playbook"]
)
OLD_TRIGGERS = counter(
    SERVICE,
    "old_triggers",
    "Events that would have started a journey of the playbook but happened more than "
    "TENURE_ORCHESTRATOR_EVENT_TRIGGER_MAX_AGE ago (a backfill or a replay): none started.",
    ["playbook"],
)
JOURNEYS_ENDED = counter(
    SERVICE, "journeys_ended", "Journeys ended, by playbook and reason.", ["playbook", "reason"]
)
STEPS = counter(
    SERVICE,
    "steps",
    "Due steps fired, by playbook, step and outcome (sent, skipped).",
    ["playbook", "step", "outcome"],
)
TIMER_LATENESS = histogram(
    SERVICE, "timer_lateness_seconds", "Real seconds between a timer's due instant and its firing."
)
TIMER_FAILURES = counter(
    SERVICE,
    "timer_failures",
    "Timers whose firing failed, by outcome (retry: after the lease; failed: given up).",
    ["outcome"],
)
OUTBOX_PUBLISHED = counter(SERVICE, "outbox_published", "Outbox records published to Kafka.")
OUTBOX_RECOVERED = counter(
    SERVICE,
    "outbox_recovered",
    "Outbox rows a relay found already on Kafka when it took over (published, not marked).",
)
RECORDS = counter(SERVICE, "records", "Kafka records consumed, by topic.", ["topic"])
ATTRIBUTIONS = counter(
    SERVICE,
    "attributions",
    "Payment events attributed to a journey as a conversion of its goal, by playbook and arm.",
    ["playbook", "arm"],
)
ERASURES = counter(
    SERVICE,
    "erasures",
    "Customers erased (operator API or CLI), by stage (postgres: the rows; scoring: the "
    "scoring worker's tombstone arrived and the erasure completed).",
    ["stage"],
)
ERASED_RECORDS = counter(
    SERVICE,
    "erased_records",
    "Profile and payment records dropped because they predate their customer's erasure.",
)
MRR_MOVEMENTS = counter(
    SERVICE,
    "mrr_movements",
    "Payment events recorded as an MRR movement, by kind (new, expansion, contraction, "
    "churn, reactivation); a replayed event counts again.",
    ["kind"],
)
