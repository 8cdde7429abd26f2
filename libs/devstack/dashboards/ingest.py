"""The ingest dashboard: HTTP requests, events accepted and rejected, Kafka transactions
and publishing latency, the producer buffer."""

from __future__ import annotations

from devstack.dashboards.model import Dashboard, Panel, Row
from devstack.dashboards.panels import INGEST_5XX, INGEST_REJECTIONS
from devstack.dashboards.promql import REQUESTS, p50_p99, q, quantile, rate

INGEST = Dashboard(
    uid="tenure-ingest",
    title="Tenure: ingest",
    description="The HTTP ingest API: requests, events accepted and rejected, publishing to "
    "Kafka (transactions), the producer buffer.",
    rows=(
        Row(
            "Rate",
            (
                Panel(
                    "Requests by status",
                    "HTTP requests answered per second, scrapes and health checks excluded.",
                    (q(rate("tenure_ingest_requests_total", "status", REQUESTS), "{{status}}"),),
                    unit="reqps",
                ),
                Panel(
                    "Events by kind and outcome",
                    "Events received per second (accepted, rejected, unavailable).",
                    (
                        q(
                            rate("tenure_ingest_events_total", "kind, outcome"),
                            "{{kind}} {{outcome}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Kafka transactions by outcome",
                    "Transactions per second, committed or aborted (events then answered 503).",
                    (q(rate("tenure_ingest_transactions_total", "outcome"), "{{outcome}}"),),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Errors",
            (
                INGEST_5XX,
                INGEST_REJECTIONS,
                Panel(
                    "Rejections by reason",
                    "Events rejected per second, by the rule they broke.",
                    (
                        q(
                            rate("tenure_ingest_events_total", "reason", 'outcome="rejected"'),
                            "{{reason}}",
                        ),
                    ),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Latency",
            (
                Panel(
                    "Request latency by route",
                    "Time to answer, p50 and p99, by route.",
                    p50_p99("tenure_ingest_request_seconds", "", "route", REQUESTS),
                    unit="s",
                ),
                Panel(
                    "Publish latency p99",
                    "From handing the records to the producer to Kafka's acknowledgement, and "
                    "its two parts: waiting for a transaction, the transaction itself.",
                    (
                        q(quantile(0.99, "tenure_ingest_publish_seconds"), "publish"),
                        q(
                            quantile(0.99, "tenure_ingest_transaction_wait_seconds"),
                            "waiting for a transaction",
                        ),
                        q(quantile(0.99, "tenure_ingest_transaction_seconds"), "transaction"),
                    ),
                    unit="s",
                ),
                Panel(
                    "Events per batch and per transaction",
                    "p50 of the events per POST /v1/batch and per Kafka transaction (group "
                    "commit).",
                    (
                        q(quantile(0.5, "tenure_ingest_batch_events"), "per batch p50"),
                        q(quantile(0.5, "tenure_ingest_transaction_events"), "per transaction p50"),
                    ),
                ),
            ),
        ),
        Row(
            "Saturation",
            (
                Panel(
                    "Producer buffer used",
                    "Events in flight / TENURE_INGEST_MAX_INFLIGHT_EVENTS (1: new events get 503).",
                    (q("max(tenure_ingest_producer_buffer_usage_ratio)", "buffer"),),
                    unit="percentunit",
                ),
                Panel(
                    "Events in flight",
                    "Events handed to the producer and not yet acknowledged.",
                    (q("sum(tenure_ingest_producer_inflight_events)", "in flight"),),
                ),
            ),
        ),
    ),
)
