"""The overview dashboard (``tenure.json``): every service's up state and golden signals,
the business flow from events in to conversions, the latency objective and the stalls
the alert rules watch (deploy/prometheus/alerts.yml, docs/runbooks.md)."""

from __future__ import annotations

from devstack.dashboards.model import Dashboard, Panel, Row
from devstack.dashboards.panels import (
    DEAD_LETTERS,
    ENDPOINTS,
    EVENT_TO_SEND,
    EVENT_TO_SEND_BY_CHANNEL,
    FAILURE_RATIO,
    GROUP_LAG,
    INGEST_5XX,
    INGEST_REJECTIONS,
    OLDEST_UNCONSUMED,
    RETRIES_OLDEST,
    SERVICES_UP,
    TIMER_BACKLOG,
)
from devstack.dashboards.promql import REQUESTS, increase, q, quantile, rate

OVERVIEW = Dashboard(
    uid="tenure",
    title="Tenure: overview",
    description="Every service's golden signals, the business flow, the latency objective "
    "and the stalls the alert rules watch (deploy/prometheus/alerts.yml, docs/runbooks.md).",
    file="tenure.json",
    rows=(
        Row("Services", (SERVICES_UP,)),
        Row(
            "Business flow",
            (
                Panel(
                    "Events in",
                    "Events accepted by ingest per second, by kind.",
                    (
                        q(
                            rate("tenure_ingest_events_total", "kind", 'outcome="accepted"'),
                            "{{kind}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Scores",
                    "Score snapshots emitted per second, and signal changes.",
                    (
                        q(rate("tenure_scoring_snapshots_total"), "snapshots"),
                        q(rate("tenure_scoring_signal_changes_total"), "signal changes"),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Journeys started and ended",
                    "Journeys started and ended per interval, by playbook.",
                    (
                        q(
                            increase("tenure_orchestrator_journeys_started_total", "playbook"),
                            "started {{playbook}}",
                        ),
                        q(
                            increase("tenure_orchestrator_journeys_ended_total", "playbook"),
                            "ended {{playbook}}",
                        ),
                    ),
                ),
                Panel(
                    "Messages sent",
                    "Notifications sent per interval, by channel.",
                    (
                        q(
                            increase(
                                "tenure_notifier_notifications_total", "channel", 'outcome="sent"'
                            ),
                            "{{channel}}",
                        ),
                    ),
                ),
                Panel(
                    "Conversions",
                    "Payment events attributed to a journey as its goal met, by playbook and "
                    "arm, per interval.",
                    (
                        q(
                            increase("tenure_orchestrator_attributions_total", "playbook, arm"),
                            "{{playbook}} {{arm}}",
                        ),
                    ),
                ),
                Panel(
                    "Live journeys",
                    "Journeys started and not ended, by playbook.",
                    (
                        q(
                            "sum by (playbook) (max by (playbook, state)"
                            " (tenure_orchestrator_journeys_live))",
                            "{{playbook}}",
                        ),
                    ),
                ),
            ),
        ),
        Row(
            "Golden signals",
            (
                Panel(
                    "Rate by service",
                    "What each service handles per second: ingest's HTTP requests, scoring's "
                    "events, the orchestrator's records, the notifier's notifications.",
                    (
                        q(rate("tenure_ingest_requests_total", selector=REQUESTS), "ingest"),
                        q(rate("tenure_scoring_events_total"), "scoring"),
                        q(rate("tenure_orchestrator_records_total"), "orchestrator"),
                        q(rate("tenure_notifier_notifications_total"), "notifier"),
                    ),
                    unit="ops",
                    width=6,
                ),
                Panel(
                    "Errors by service",
                    "Failures per second: ingest's 5xx answers, scoring's invalid inputs, the "
                    "orchestrator's failed timers, the notifier's failed attempts.",
                    (
                        q(
                            rate("tenure_ingest_requests_total", selector='status=~"5.."'),
                            "ingest 5xx",
                        ),
                        q(
                            rate("tenure_scoring_events_total", selector='outcome="invalid"'),
                            "scoring invalid",
                        ),
                        q(rate("tenure_orchestrator_timer_failures_total"), "orchestrator timers"),
                        q(rate("tenure_notifier_send_failures_total"), "notifier attempts"),
                    ),
                    unit="ops",
                    width=6,
                ),
                Panel(
                    "Latency p99 by service",
                    "Ingest's answer, scoring one input, a timer's lateness, one delivery.",
                    (
                        q(
                            quantile(0.99, "tenure_ingest_request_seconds", selector=REQUESTS),
                            "ingest request",
                        ),
                        q(quantile(0.99, "tenure_scoring_score_seconds"), "scoring input"),
                        q(
                            quantile(0.99, "tenure_orchestrator_timer_lateness_seconds"),
                            "orchestrator timer lateness",
                        ),
                        q(quantile(0.99, "tenure_notifier_send_seconds"), "notifier send"),
                    ),
                    unit="s",
                    width=6,
                ),
                Panel(
                    "Saturation",
                    "Ingest's producer buffer in use (1: new events get 503), and the share of "
                    "endpoints the notifier could not reach on its last attempt.",
                    (
                        q("max(tenure_ingest_producer_buffer_usage_ratio)", "ingest buffer"),
                        q("1 - avg(tenure_notifier_endpoint_up)", "notifier endpoints down"),
                    ),
                    unit="percentunit",
                    width=6,
                ),
            ),
        ),
        Row("Latency objective", (EVENT_TO_SEND, EVENT_TO_SEND_BY_CHANNEL)),
        Row(
            "Stalls (alert rules: deploy/prometheus/alerts.yml, docs/runbooks.md)",
            (
                GROUP_LAG,
                OLDEST_UNCONSUMED,
                TIMER_BACKLOG,
                FAILURE_RATIO,
                ENDPOINTS,
                RETRIES_OLDEST,
                DEAD_LETTERS,
                INGEST_5XX,
                INGEST_REJECTIONS,
            ),
        ),
    ),
)
