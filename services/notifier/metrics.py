"""Every metric of the notifier, declared once."""

from common.metrics import counter, gauge, histogram

SERVICE = "notifier"

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
    "permanent, render).",
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
