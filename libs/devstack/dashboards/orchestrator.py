"""The orchestrator dashboard: records consumed, journeys and steps, timers and the outbox,
every consumer group's lag seen from outside, attribution, MRR movements and erasures."""

from __future__ import annotations

from devstack.dashboards.model import Dashboard, Panel, Row
from devstack.dashboards.panels import BACKLOG_COUNTS, GROUP_LAG, OLDEST_UNCONSUMED, TIMER_BACKLOG
from devstack.dashboards.promql import increase, p50_p99, q, rate

ORCHESTRATOR = Dashboard(
    uid="tenure-orchestrator",
    title="Tenure: orchestrator",
    description="Journeys as durable state machines: records consumed, journeys and steps, "
    "timers, the outbox, attribution, and every group's lag seen from outside.",
    rows=(
        Row(
            "Rate",
            (
                Panel(
                    "Records consumed by topic",
                    "Kafka records consumed per second, by topic.",
                    (q(rate("tenure_orchestrator_records_total", "topic"), "{{topic}}"),),
                    unit="ops",
                ),
                Panel(
                    "Journeys started and ended",
                    "Per interval, by playbook (ended: and reason).",
                    (
                        q(
                            increase("tenure_orchestrator_journeys_started_total", "playbook"),
                            "started {{playbook}}",
                        ),
                        q(
                            increase(
                                "tenure_orchestrator_journeys_ended_total", "playbook, reason"
                            ),
                            "ended {{playbook}} ({{reason}})",
                        ),
                    ),
                ),
                Panel(
                    "Steps fired",
                    "Due steps fired per interval, by playbook, step and outcome.",
                    (
                        q(
                            increase("tenure_orchestrator_steps_total", "playbook, step, outcome"),
                            "{{playbook}} {{step}} {{outcome}}",
                        ),
                    ),
                ),
                Panel(
                    "Live journeys by playbook and state",
                    "Journeys started and not ended (read from PostgreSQL every "
                    "TENURE_METRICS_EVERY_S).",
                    (
                        q(
                            "max by (playbook, state) (tenure_orchestrator_journeys_live)",
                            "{{playbook}} {{state}}",
                        ),
                    ),
                ),
                Panel(
                    "Outbox published",
                    "Outbox records published per second, and rows a new relay found already "
                    "on Kafka.",
                    (
                        q(rate("tenure_orchestrator_outbox_published_total"), "published"),
                        q(rate("tenure_orchestrator_outbox_recovered_total"), "recovered"),
                    ),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Errors",
            (
                Panel(
                    "Timer failures",
                    "Timers whose firing failed per interval (retry: after the lease; failed: "
                    "given up).",
                    (
                        q(
                            increase("tenure_orchestrator_timer_failures_total", "outcome"),
                            "{{outcome}}",
                        ),
                    ),
                ),
                Panel(
                    "Consumer dead letters",
                    "Records the orchestrator's consumers could not read, by topic "
                    "(TenureConsumerDeadLetters: any).",
                    (
                        q(
                            increase("tenure_orchestrator_consumer_dead_letters_total", "topic"),
                            "{{topic}}",
                        ),
                    ),
                ),
            ),
        ),
        Row(
            "Latency",
            (
                Panel(
                    "Timer lateness",
                    "Real seconds between a timer's due instant and its firing, p50 and p99.",
                    p50_p99("tenure_orchestrator_timer_lateness_seconds", "lateness"),
                    unit="s",
                ),
            ),
        ),
        Row(
            "Saturation",
            (
                TIMER_BACKLOG,
                BACKLOG_COUNTS,
                Panel(
                    "Own consumers' lag",
                    "Records not yet processed by the orchestrator's own consumers, as they "
                    "measure it (TenureConsumerLagGrowing: over the line and rising).",
                    (
                        q(
                            "sum by (group, topic) (tenure_orchestrator_consumer_lag)",
                            "{{group}} {{topic}}",
                        ),
                    ),
                    alerts=("TenureConsumerLagGrowing",),
                ),
                GROUP_LAG,
                OLDEST_UNCONSUMED,
            ),
        ),
        Row(
            "Business",
            (
                Panel(
                    "Conversions",
                    "Payment events attributed to a journey's goal, by playbook and arm.",
                    (
                        q(
                            increase("tenure_orchestrator_attributions_total", "playbook, arm"),
                            "{{playbook}} {{arm}}",
                        ),
                    ),
                ),
                Panel(
                    "MRR movements",
                    "Payment events recorded as an MRR movement, by kind, per interval.",
                    (q(increase("tenure_orchestrator_mrr_movements_total", "kind"), "{{kind}}"),),
                ),
                Panel(
                    "Erasures",
                    "Customers erased by stage, and records dropped as older than an erasure.",
                    (
                        q(increase("tenure_orchestrator_erasures_total", "stage"), "{{stage}}"),
                        q(increase("tenure_orchestrator_erased_records_total"), "records dropped"),
                    ),
                ),
            ),
        ),
    ),
)
