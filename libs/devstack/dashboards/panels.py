"""The panels shown on more than one dashboard: the stalls the alert rules watch (group
lag, timers and outbox, delivery failures, retries, dead letters, the ingest ratios), the
event-to-notification latency objective, the services' up state, and
:func:`group_panels` for one consumer group's lag and oldest unconsumed record (all
measured by the orchestrator's probe)."""

from __future__ import annotations

from devstack.dashboards.model import Panel
from devstack.dashboards.promql import JOBS, failure_ratio, increase, p50_p99, q, quantile, rate

GROUP_LAG = Panel(
    "Consumer lag by group",
    "Records not yet processed per consumer group and topic, seen from outside the group by "
    "the orchestrator (TenureConsumerLagGrowing: over the line and rising for 10 minutes).",
    (
        q(
            "max by (group, topic) (sum by (group, topic, instance)"
            " (tenure_orchestrator_group_lag))",
            "{{group}} {{topic}}",
        ),
    ),
    alerts=("TenureConsumerLagGrowing",),
)
OLDEST_UNCONSUMED = Panel(
    "Oldest unconsumed record by group",
    "Seconds since the oldest record a group has not processed was produced, per group and "
    "topic (the record at its committed offset, read by the orchestrator's probe): how far "
    "behind in time a stalled consumer is.",
    (
        q(
            "max by (group, topic) (tenure_orchestrator_group_oldest_unconsumed_seconds)",
            "{{group}} {{topic}}",
        ),
    ),
    unit="s",
)
TIMER_BACKLOG = Panel(
    "Timers behind, outbox waiting",
    "Real seconds since the oldest due timer came due (TenureTimersBehind) and since the "
    "oldest unpublished outbox row was written (TenureOutboxStuck); each alerts over its "
    "line for 5 minutes.",
    (
        q("max(tenure_orchestrator_timers_oldest_due_seconds)", "oldest due timer"),
        q("max(tenure_orchestrator_outbox_oldest_seconds)", "oldest outbox row"),
    ),
    unit="s",
    alerts=("TenureTimersBehind", "TenureOutboxStuck"),
)
BACKLOG_COUNTS = Panel(
    "Timers due, outbox rows waiting",
    "Due timers not fired and outbox rows not published (a few at most when keeping up).",
    (
        q("max(tenure_orchestrator_timers_due)", "timers due"),
        q("max(tenure_orchestrator_outbox_pending)", "outbox rows"),
    ),
)
FAILURE_RATIO = Panel(
    "Delivery failure ratio by channel",
    "Failed attempts / attempts (TenureDeliveryFailures: email and in-app over the lower "
    "line for 5 minutes; TenureWebhookEndpointFailing: webhooks over the upper line for 10 "
    "minutes).",
    (q(failure_ratio("email|in_app|webhook"), "{{channel}}"),),
    unit="percentunit",
    alerts=("TenureDeliveryFailures", "TenureWebhookEndpointFailing"),
)
ENDPOINTS = Panel(
    "Endpoint availability",
    "1 when the last attempt on the mail server or a webhook route reached it, 0 when it "
    "could not (refused, timed out, 4xx SMTP, 5xx HTTP).",
    (q("min by (channel, endpoint) (tenure_notifier_endpoint_up)", "{{channel}} {{endpoint}}"),),
)
RETRIES_OLDEST = Panel(
    "Retries waiting",
    "Since when the oldest notification waiting for a retry was first tried, by channel "
    "(TenureRetriesPilingUp: over the line for 10 minutes).",
    (q("max by (channel) (tenure_notifier_retries_oldest_seconds)", "{{channel}} oldest"),),
    unit="s",
    alerts=("TenureRetriesPilingUp",),
)
RETRIES_WAITING = Panel(
    "Notifications waiting for a retry",
    "Notifications scheduled for another attempt after a transient failure, by channel.",
    (q("max by (channel) (tenure_notifier_retries_waiting)", "{{channel}}"),),
)
DEAD_LETTERS = Panel(
    "Dead letters",
    "Notifications given up, by channel and reason (TenureDeadLetters), and records "
    "consumers could not read, by topic (TenureConsumerDeadLetters): any is an alert.",
    (
        q(
            increase("tenure_notifier_dead_letters_total", "channel, reason"),
            "{{channel}} {{reason}}",
        ),
        q(increase("tenure_notifier_consumer_dead_letters_total", "topic"), "notifier {{topic}}"),
        q(
            increase("tenure_orchestrator_consumer_dead_letters_total", "topic"),
            "orchestrator {{topic}}",
        ),
    ),
)
EVENT_TO_SEND = Panel(
    "Event to notification latency",
    "Seconds from ingest accepting the event that caused a notification to its sending, p50 "
    "and p99. The objective (TenureLatencyBudgetFastBurn, TenureLatencyBudgetSlowBurn): 99 % "
    "under the line.",
    p50_p99("tenure_notifier_event_to_send_seconds", "event to send"),
    unit="s",
    alerts=("TenureLatencyBudgetFastBurn", "TenureLatencyBudgetSlowBurn"),
    width=12,
)
EVENT_TO_SEND_BY_CHANNEL = Panel(
    "Event to notification latency p99 by playbook and channel",
    "p99 of the seconds from the causing event's ingest to the send, per playbook and "
    "channel (TenureLatencyBudgetFastBurn, TenureLatencyBudgetSlowBurn: 99 % under the line).",
    (
        q(
            quantile(0.99, "tenure_notifier_event_to_send_seconds", "playbook, channel"),
            "{{playbook}} {{channel}}",
        ),
    ),
    unit="s",
    alerts=("TenureLatencyBudgetFastBurn", "TenureLatencyBudgetSlowBurn"),
    width=12,
)
INGEST_5XX = Panel(
    "Ingest 5xx ratio",
    "Requests answered 5xx / requests (TenureIngestErrorRatio: over the line for 5 minutes).",
    (
        q(
            rate("tenure_ingest_requests_total", selector='status=~"5.."')
            + " / "
            + rate("tenure_ingest_requests_total"),
            "5xx",
        ),
    ),
    unit="percentunit",
    alerts=("TenureIngestErrorRatio",),
)
INGEST_REJECTIONS = Panel(
    "Ingest rejection ratio",
    "Events rejected as invalid / events received (TenureIngestRejectionsSpiking: over the "
    "line for 10 minutes).",
    (
        q(
            rate("tenure_ingest_events_total", selector='outcome="rejected"')
            + " / "
            + rate("tenure_ingest_events_total"),
            "rejected",
        ),
    ),
    unit="percentunit",
    alerts=("TenureIngestRejectionsSpiking",),
)
SERVICES_UP = Panel(
    "Services up",
    "Whether Prometheus reaches each service's /metrics (TenureServiceDown when 0 for 2 minutes).",
    (q(f'up{{job=~"{JOBS}"}}', "{{job}} {{instance}}"),),
    kind="stat",
    width=24,
)


def group_panels(group: str) -> tuple[Panel, Panel]:
    """Lag and oldest unconsumed record of one consumer group (the orchestrator's probe)."""
    sel = f'group=~"{group}"'
    return (
        Panel(
            "Consumer lag",
            f"Records of {group} not yet processed, by topic, seen from outside the group "
            "(TenureConsumerLagGrowing: over the line and rising for 10 minutes).",
            (
                q(
                    f"max by (group, topic) (sum by (group, topic, instance)"
                    f" (tenure_orchestrator_group_lag{{{sel}}}))",
                    "{{group}} {{topic}}",
                ),
            ),
            alerts=("TenureConsumerLagGrowing",),
        ),
        Panel(
            "Oldest unconsumed record",
            f"Seconds since the oldest record {group} has not processed was produced.",
            (
                q(
                    f"max by (group, topic)"
                    f" (tenure_orchestrator_group_oldest_unconsumed_seconds{{{sel}}})",
                    "{{group}} {{topic}}",
                ),
            ),
            unit="s",
        ),
    )
