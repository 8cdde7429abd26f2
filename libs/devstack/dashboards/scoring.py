"""The scoring dashboard: inputs folded into scores, snapshots and signal changes, invalid
inputs, scoring latency, the workers' consumer lag, cohorts, loyalty and erasures."""

from __future__ import annotations

from devstack.dashboards.model import Dashboard, Panel, Row
from devstack.dashboards.panels import group_panels
from devstack.dashboards.promql import increase, p50_p99, q, rate

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
