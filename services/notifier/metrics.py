"""Every metric of the notifier, declared once."""

from common.metrics import (
    LagGauge,
    build_info,
    consumer_dead_letters,
    consumer_lag,
    counter,
    gauge,
    histogram,
)

SERVICE = "notifier"

BUILD_INFO = build_info(SERVICE)
CONSUMER_LAG = consumer_lag(SERVICE)
report_lag = LagGauge(CONSUMER_LAG)
"""The ``report_lag`` of the notifier's consumer (``common.kafka.run_consumer``)."""
CONSUMER_DEAD_LETTERS = consumer_dead_letters(SERVICE)


def dead_lettered(topic: str) -> None:
    """The ``on_sent`` of the service's ``common.kafka.DeadLetters``."""
    CONSUMER_DEAD_LETTERS.labels(topic=topic).inc()


NOTIFICATIONS = counter(
    SERVICE,
    "notifications",
    "Notifications handled, by channel and final outcome (sent, suppressed, bounced, dead, "
    "unknown, duplicate).",
    ["channel", "outcome"],
)
ATTEMPT_FAILURES = counter(
    SERVICE,
    "attempt_failures",
    "Delivery attempts that failed, by channel and kind (transient = retried later, "
    "permanent, render, unknown = an email the mail server never answered once it was "
    "handed over: retried or recorded `unknown` by EMAIL_RESEND_AFTER_CRASH).",
    ["channel", "kind"],
)
RETRIES_SCHEDULED = counter(
    SERVICE,
    "retries_scheduled",
    "Attempts scheduled again after a failure, by channel.",
    ["channel"],
)
DEAD_LETTERS = counter(
    SERVICE,
    "dead_letters",
    "Notifications given up and written to the notifications dead-letter topic, by channel "
    "and reason (render, permanent, expired).",
    ["channel", "reason"],
)
TAKEN_OVER = counter(
    SERVICE,
    "taken_over",
    "Notifications a worker left in flight when it died, taken over after the sending "
    "lease, by channel and outcome (resent: tried again; unknown: an email possibly sent, "
    "recorded `unknown` and not sent again, by EMAIL_RESEND_AFTER_CRASH).",
    ["channel", "outcome"],
)
SEND_SECONDS = histogram(
    SERVICE, "send_seconds", "Time to deliver one message, by channel.", ["channel"]
)
TRACKED = counter(
    SERVICE,
    "tracked",
    "Engagement recorded over HTTP (opened, clicked, ...), by status.",
    ["status"],
)
LINKS_REFUSED = counter(
    SERVICE,
    "links_refused",
    "Followed links not recorded, by kind (tracking, unsubscribe) and reason (expired, "
    "invalid: a bad signature or an unknown key, unknown: no such notification).",
    ["kind", "reason"],
)
UNSUBSCRIBES = counter(
    SERVICE, "unsubscribes", "One-click unsubscribe requests accepted, by whether new.", ["new"]
)
INBOX_REQUESTS = counter(
    SERVICE,
    "inbox_requests",
    "In-app inbox API requests, by action and answer (ok, unauthorized, not_found).",
    ["action", "answer"],
)
INBOX_STREAMS = gauge(SERVICE, "inbox_streams", "Open server-sent-event inbox streams.")
SEND_FAILURES = counter(
    SERVICE,
    "send_failures",
    "Delivery attempts that failed, by channel and error class (the class of the error "
    "underneath: SMTPServerDisconnected, ConnectError, ..., or SendError for an HTTP "
    "status). A ratio over attempts is the delivery-failure alert's.",
    ["channel", "error"],
)


def send_failed(channel: str, error: BaseException) -> None:
    """Count a failed attempt under the class of ``error``'s cause (what went wrong on
    the wire), or of ``error`` itself when it has none."""
    cause = error.__cause__ or error
    SEND_FAILURES.labels(channel=channel, error=type(cause).__name__).inc()


ENDPOINT_UP = gauge(
    SERVICE,
    "endpoint_up",
    "Whether the last delivery attempt reached the endpoint, by channel (email, webhook) and "
    "endpoint (the mail server's host:port; a webhook route's name, never its URL): 1 when "
    "it answered about the message (accepted, or refused the recipient for good), 0 when "
    "it could not be reached or failed transiently (refused connection, timeout, SMTP 4xx, "
    "HTTP 5xx/408/409/429). A permanent refusal leaves it as it was; absent before the "
    "first attempt.",
    ["channel", "endpoint"],
    multiprocess_mode="mostrecent",  # with several processes, the latest attempt's outcome
)


def endpoint_reached(channel: str, endpoint: str, up: bool) -> None:
    """Record the outcome of an attempt on ``endpoint`` in :data:`ENDPOINT_UP`."""
    ENDPOINT_UP.labels(channel=channel, endpoint=endpoint).set(1 if up else 0)


RETRIES_WAITING = gauge(
    SERVICE,
    "retries_waiting",
    "Notifications scheduled for another attempt after a transient failure, by channel.",
    ["channel"],
    multiprocess_mode="max",
)
RETRIES_OLDEST_SECONDS = gauge(
    SERVICE,
    "retries_oldest_seconds",
    "Real seconds since the first attempt of the oldest notification waiting for a retry, "
    "by channel (0: none waits).",
    ["channel"],
    multiprocess_mode="max",
)
EVENT_TO_SEND_SECONDS = histogram(
    SERVICE,
    "event_to_send_seconds",
    "Real seconds from ingest accepting the event that caused a notification to its sending "
    "(emailed, stored in the inbox or posted), by playbook and channel: the latency "
    "objective's (99 % under 60 s). Observed for notifications sent as the immediate "
    "reaction to an event (its ingested_at header carried through scoring and the "
    "journey), retries included; not for steps sent later by design (delays, quiet "
    "hours, the frequency cap, held triggers).",
    ["playbook", "channel"],
    buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 300, 600),
)
