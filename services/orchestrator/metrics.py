"""Every metric of the orchestrator, declared once."""

from common.metrics import counter, histogram

SERVICE = "orchestrator"

JOURNEYS_STARTED = counter(
    SERVICE, "journeys_started", "Journeys started, by playbook.", ["playbook"]
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
