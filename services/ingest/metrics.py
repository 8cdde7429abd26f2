"""Every metric of the ingest service, declared once."""

from common.metrics import counter, histogram

SERVICE = "ingest"

REQUESTS = counter(
    SERVICE, "requests", "HTTP requests answered, by route and status.", ["route", "status"]
)
REQUEST_SECONDS = histogram(
    SERVICE, "request_seconds", "Time to answer an HTTP request.", ["route"]
)
EVENTS = counter(
    SERVICE,
    "events",
    "Events received, by kind and outcome (accepted, rejected, unavailable).",
    ["kind", "outcome"],
)
PUBLISH_SECONDS = histogram(
    SERVICE, "publish_seconds", "Time from publish to Kafka acknowledgement."
)
