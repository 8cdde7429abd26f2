"""The notifier dashboard: email, in-app and webhook outcomes, failures and retries, the
endpoints' availability, latency from the causing event, the tracking and inbox APIs."""

from __future__ import annotations

from devstack.dashboards.model import Dashboard, Panel, Row
from devstack.dashboards.panels import (
    DEAD_LETTERS,
    ENDPOINTS,
    EVENT_TO_SEND,
    FAILURE_RATIO,
    RETRIES_OLDEST,
    RETRIES_WAITING,
    group_panels,
)
from devstack.dashboards.promql import increase, p50_p99, q, rate

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
                    "Transient (retried), permanent and render failures, unknown ones (an "
                    "email the mail server never answered once it had it: retried or "
                    "recorded unknown by the resend policy), and retries scheduled, per "
                    "interval.",
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
