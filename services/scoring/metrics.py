"""Every metric of the scoring service, declared once."""

from common.metrics import counter, histogram

SERVICE = "scoring"

EVENTS = counter(
    SERVICE,
    "events",
    "Events consumed, by kind and outcome (scored, duplicate, invalid).",
    ["kind", "outcome"],
)
SIGNAL_CHANGES = counter(
    SERVICE, "signal_changes", "Signal changes emitted, by change and name.", ["change", "name"]
)
SNAPSHOTS = counter(SERVICE, "snapshots", "Score snapshots emitted on the scores topic.")
SCORE_SECONDS = histogram(SERVICE, "score_seconds", "Time to fold and evaluate one event.")
