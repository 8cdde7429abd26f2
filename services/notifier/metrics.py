"""Every metric of the notifier, declared once."""

from common.metrics import counter, histogram

SERVICE = "notifier"

NOTIFICATIONS = counter(
    SERVICE,
    "notifications",
    "Notifications consumed, by channel and outcome (sent, failed, duplicate).",
    ["channel", "outcome"],
)
SEND_SECONDS = histogram(
    SERVICE, "send_seconds", "Time to deliver one message, by channel.", ["channel"]
)
TRACKED = counter(SERVICE, "tracked", "Tracked engagement (clicks), by status.", ["status"])
