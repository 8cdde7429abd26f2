"""Tenure's Grafana dashboards as code: ``python -m devstack.dashboards`` writes them to
``deploy/grafana/dashboards/`` (``make dashboards``), where Grafana's provisioning reads
them, and to the Helm chart's ``files/dashboards/``; tests/unit/test_dashboards.py fails
when the committed JSON is not what this module makes.

One overview (the golden signals of every service, the business flow, the
event-to-notification latency and the stalls the alerts watch) and one dashboard per
service. A panel that shows what an alert watches names the alert in its description and
draws its threshold, read here from ``deploy/prometheus/alerts.yml`` (the one place the
numbers live); the test checks the drawn values against the rules.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
FOLDER = REPO / "deploy" / "grafana" / "dashboards"
CHART_FOLDER = REPO / "deploy" / "helm" / "tenure" / "files" / "dashboards"
"""The Helm chart's copies (Helm reads no file outside the chart)."""
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"
JOBS = "ingest|scoring|orchestrator|notifier"


# -- the thresholds of the alert rules ------------------------------------------------------


@cache
def _rules() -> dict[str, str]:
    """Every rule's expression, by alert name or recording rule name."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {r.get("alert") or r["record"]: r["expr"] for g in groups for r in g["rules"]}


def alert_thresholds(alert: str) -> tuple[float, ...]:
    """The values an alert compares against (``> 100``; 0, "rising", is not drawn). For
    a burn-rate alert on the latency objective: the objective's bound in seconds (the
    ``le`` bucket of the ratio it reads), which is what a latency panel can draw."""
    expr = _rules()[alert]
    objective = re.search(r"(tenure:[\w:]+)", expr)
    if objective:
        bound = re.search(r'le=~?"([\d.]+)', _rules()[objective.group(1)])
        assert bound, f"{alert}: no le bound in {objective.group(1)}"
        return (float(bound.group(1)),)
    found = {float(v) for v in re.findall(r">\s*([\d.]+)\b(?!\s*\*)", expr)} - {0.0}
    assert found, f"{alert}: no threshold in its expression"
    return tuple(sorted(found))


# -- panels ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """A panel; ``alerts`` are the alert rules whose thresholds it draws."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    alerts: tuple[str, ...] = ()
    kind: str = "timeseries"
    width: int = 8


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    file: str = field(default="")

    @property
    def filename(self) -> str:
        return self.file or f"{self.uid}.json"


def q(expr: str, legend: str) -> Query:
    return Query(" ".join(expr.split()), legend)


def rate(metric: str, by: str = "", selector: str = "") -> str:
    """``sum by (by) (rate(metric{selector}[$__rate_interval]))``."""
    grouping = f"by ({by}) " if by else ""
    return f"sum {grouping}(rate({metric}{{{selector}}}[{RATE}]))".replace("{}", "")


def increase(metric: str, by: str = "", selector: str = "") -> str:
    grouping = f"by ({by}) " if by else ""
    return f"sum {grouping}(increase({metric}{{{selector}}}[{RATE}]))".replace("{}", "")


def quantile(phi: float, histogram: str, by: str = "", selector: str = "") -> str:
    """The ``phi`` quantile of a histogram over the rate interval, by ``by``."""
    keys = ", ".join(["le", *([by] if by else [])])
    inner = f"sum by ({keys}) (rate({histogram}_bucket{{{selector}}}[{RATE}]))".replace("{}", "")
    return f"histogram_quantile({phi}, {inner})"


def failure_ratio(channels: str, by: str = "channel") -> str:
    """Failed attempts / attempts (failed + sent): the delivery alerts' ratio."""
    sel = f'channel=~"{channels}"'
    failed = rate("tenure_notifier_send_failures_total", by, sel)
    sent = rate("tenure_notifier_notifications_total", by, f'{sel},outcome="sent"')
    return f"{failed} / ({failed} + ({sent} or 0 * {failed}))"


def p50_p99(histogram: str, what: str, by: str = "", selector: str = "") -> tuple[Query, ...]:
    label = f" {{{{{by}}}}}" if by else ""
    return (
        q(quantile(0.5, histogram, by, selector), f"{what}{label} p50"),
        q(quantile(0.99, histogram, by, selector), f"{what}{label} p99"),
    )


# -- panels shared by the overview and the service dashboards -------------------------------

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
REQUESTS = 'route!~"/metrics.*|/healthz"'


# -- the dashboards -------------------------------------------------------------------------

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


SCORING = Dashboard(
    uid="tenure-scoring",
    title="Tenure: scoring",
    description="The scoring workers: events, notifier outcomes and clock ticks folded into "
    "scores, snapshots and signal changes emitted, and how far behind the topics they are.",
    rows=(
        Row(
            "Rate",
            (
                Panel(
                    "Events by outcome",
                    "Events consumed per second: scored, duplicate, invalid.",
                    (q(rate("tenure_scoring_events_total", "outcome"), "{{outcome}}"),),
                    unit="ops",
                ),
                Panel(
                    "Snapshots and signal changes",
                    "Score snapshots and edge-triggered signal changes emitted per second.",
                    (
                        q(rate("tenure_scoring_snapshots_total"), "snapshots"),
                        q(
                            rate("tenure_scoring_signal_changes_total", "name, change"),
                            "{{name}} {{change}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Outcomes and clock ticks",
                    "Notifier outcomes consumed, and the clock's re-evaluations, by outcome.",
                    (
                        q(
                            rate("tenure_scoring_deliveries_total", "outcome"),
                            "outcome {{outcome}}",
                        ),
                        q(rate("tenure_scoring_ticks_total", "outcome"), "tick {{outcome}}"),
                    ),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Errors",
            (
                Panel(
                    "Invalid inputs",
                    "Inputs scoring could not read, per second, by stream.",
                    (
                        q(
                            rate("tenure_scoring_events_total", selector='outcome="invalid"'),
                            "events",
                        ),
                        q(
                            rate("tenure_scoring_deliveries_total", selector='outcome="invalid"'),
                            "notifier outcomes",
                        ),
                        q(
                            rate("tenure_scoring_ticks_total", selector='outcome="invalid"'),
                            "ticks",
                        ),
                        q(
                            rate(
                                "tenure_scoring_cohort_deltas_total", selector='outcome="invalid"'
                            ),
                            "cohort deltas",
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
                    "Time to score one input",
                    "Folding and evaluating one input, p50 and p99.",
                    p50_p99("tenure_scoring_score_seconds", "score"),
                    unit="s",
                ),
                Panel(
                    "Ingest to score snapshot",
                    "Seconds from ingest accepting an event to the score snapshot it caused "
                    "being handed to scoring's producer, p50 and p99: scoring's share of the "
                    "event-to-notification latency.",
                    p50_p99("tenure_scoring_ingest_to_snapshot_seconds", "ingest to snapshot"),
                    unit="s",
                ),
            ),
        ),
        Row("Saturation", group_panels("tenure-scoring")),
        Row(
            "Cohorts, loyalty, privacy",
            (
                Panel(
                    "Cohorts",
                    "Plan-cohort deltas summed, and changes of a plan's pooled counts.",
                    (
                        q(rate("tenure_scoring_cohort_deltas_total", "outcome"), "{{outcome}}"),
                        q(rate("tenure_scoring_cohort_updates_total"), "updates"),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Redemptions",
                    "Loyalty redemptions per interval, by outcome.",
                    (q(increase("tenure_scoring_redemptions_total", "outcome"), "{{outcome}}"),),
                ),
                Panel(
                    "Erasures",
                    "Erasure records consumed per interval, by outcome.",
                    (q(increase("tenure_scoring_erasures_total", "outcome"), "{{outcome}}"),),
                ),
            ),
        ),
    ),
)

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

NOTIFIER = Dashboard(
    uid="tenure-notifier",
    title="Tenure: notifier",
    description="Email, in-app and webhook delivery: outcomes, failures and retries, the "
    "endpoints' availability, latency from the causing event, the tracking API.",
    rows=(
        Row(
            "Rate",
            (
                Panel(
                    "Notifications by channel and outcome",
                    "Notifications handled per second, by final outcome.",
                    (
                        q(
                            rate("tenure_notifier_notifications_total", "channel, outcome"),
                            "{{channel}} {{outcome}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Engagement tracked",
                    "Opens, clicks and other engagement recorded over HTTP, and one-click "
                    "unsubscribes, per interval.",
                    (
                        q(increase("tenure_notifier_tracked_total", "status"), "{{status}}"),
                        q(increase("tenure_notifier_unsubscribes_total"), "unsubscribes"),
                    ),
                ),
                Panel(
                    "In-app inbox",
                    "Inbox API requests per second by action and answer, and open streams.",
                    (
                        q(
                            rate("tenure_notifier_inbox_requests_total", "action, answer"),
                            "{{action}} {{answer}}",
                        ),
                        q("sum(tenure_notifier_inbox_streams)", "open streams"),
                    ),
                ),
            ),
        ),
        Row(
            "Errors",
            (
                FAILURE_RATIO,
                Panel(
                    "Send failures by error class",
                    "Failed attempts per second, by channel and the error underneath.",
                    (
                        q(
                            rate("tenure_notifier_send_failures_total", "channel, error"),
                            "{{channel}} {{error}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Attempt failures by kind",
                    "Transient (retried), permanent and render failures, and retries "
                    "scheduled, per interval.",
                    (
                        q(
                            increase("tenure_notifier_attempt_failures_total", "channel, kind"),
                            "{{channel}} {{kind}}",
                        ),
                        q(
                            increase("tenure_notifier_retries_scheduled_total", "channel"),
                            "{{channel}} retry scheduled",
                        ),
                    ),
                ),
                DEAD_LETTERS,
                Panel(
                    "Taken over after a crash",
                    "Notifications a dead worker left in flight, by channel and outcome.",
                    (
                        q(
                            increase("tenure_notifier_taken_over_total", "channel, outcome"),
                            "{{channel}} {{outcome}}",
                        ),
                    ),
                ),
                Panel(
                    "Links refused",
                    "Followed links not recorded, by kind and reason.",
                    (
                        q(
                            increase("tenure_notifier_links_refused_total", "kind, reason"),
                            "{{kind}} {{reason}}",
                        ),
                    ),
                ),
            ),
        ),
        Row(
            "Latency",
            (
                Panel(
                    "Time to deliver one message",
                    "p50 and p99 by channel.",
                    p50_p99("tenure_notifier_send_seconds", "", "channel"),
                    unit="s",
                ),
                EVENT_TO_SEND,
            ),
        ),
        Row(
            "Saturation",
            (
                ENDPOINTS,
                RETRIES_WAITING,
                RETRIES_OLDEST,
                Panel(
                    "Consumer lag",
                    "Records not yet processed by the notifier, as its consumer measures it "
                    "(TenureConsumerLagGrowing: over the line and rising).",
                    (
                        q(
                            "sum by (group, topic) (tenure_notifier_consumer_lag)",
                            "{{group}} {{topic}}",
                        ),
                    ),
                    alerts=("TenureConsumerLagGrowing",),
                ),
                group_panels("tenure-notifier")[1],
            ),
        ),
    ),
)

DASHBOARDS = (OVERVIEW, INGEST, SCORING, ORCHESTRATOR, NOTIFIER)


# -- Grafana's JSON -------------------------------------------------------------------------


def _thresholds(panel: Panel) -> dict[str, Any]:
    values = sorted({v for alert in panel.alerts for v in alert_thresholds(alert)})
    colours = ["red"] if len(values) == 1 else ["orange", "red"] * len(values)
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": colours[i], "value": v} for i, v in enumerate(values)]
    return {"mode": "absolute", "steps": steps}


def _panel(panel: Panel, panel_id: int, x: int, y: int, height: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.alerts:
        defaults["thresholds"] = _thresholds(panel)
        defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    options: dict[str, Any] = {
        "legend": {"displayMode": "list", "placement": "bottom"},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    if panel.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
        }
        defaults["mappings"] = [
            {
                "type": "value",
                "options": {"0": {"text": "down", "color": "red"}, "1": {"text": "up"}},
            }
        ]
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
                "refId": chr(ord("A") + i),
            }
            for i, query in enumerate(panel.queries)
        ],
    }


def render(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model: rows, then panels left to right."""
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row in dashboard.rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        height = 4 if all(p.kind == "stat" for p in row.panels) else 8
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + height
            panels.append(_panel(panel, next_id, x, y, height))
            next_id += 1
            x += panel.width
        y += height
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["tenure"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["tenure"],
                "asDropdown": True,
                "title": "Tenure dashboards",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "panels": panels,
    }


GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
}
"""What Grafana puts in place of its variables, as a query to Prometheus would have them
(``$__rate_interval`` is at least four scrape intervals: one minute at 15 s)."""


def as_promql(expr: str, variables: dict[str, str] = GRAFANA_VARIABLES) -> str:
    """A panel's expression as Grafana sends it to Prometheus (its variables replaced)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(name, variables[name])
    return expr


def prometheus_targets(path: Path) -> list[tuple[str, str, str]]:
    """(panel title, refId, expression) of every Prometheus query of a dashboard file,
    rows' nested panels included; other datasources' targets are left out."""
    model = json.loads(path.read_text())
    panels = [p for top in model["panels"] for p in [top, *top.get("panels", [])]]
    return [
        (panel["title"], target.get("refId", ""), target["expr"])
        for panel in panels
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def as_text(dashboard: Dashboard) -> str:
    return json.dumps(render(dashboard), indent=2, ensure_ascii=False) + "\n"


def write(folders: tuple[Path, ...] = (FOLDER, CHART_FOLDER)) -> list[Path]:
    """Write every dashboard into each of ``folders``; the paths written."""
    paths = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for dashboard in DASHBOARDS:
            path = folder / dashboard.filename
            path.write_text(as_text(dashboard))
            paths.append(path)
    return paths


if __name__ == "__main__":
    chosen = tuple(Path(arg) for arg in sys.argv[1:]) or (FOLDER, CHART_FOLDER)
    for written in write(chosen):
        print(written.relative_to(REPO) if written.is_relative_to(REPO) else written)
