"""SQLAlchemy Core tables of the orchestrator (the schema itself is in common/migrations)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = sa.MetaData()
TS = sa.TIMESTAMP(timezone=True)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("email", sa.Text),
    sa.Column("first_name", sa.Text),
    sa.Column("time_zone", sa.Text),
    sa.Column("plan", sa.Text),
    sa.Column("mrr", sa.Numeric(12, 2)),
    sa.Column("consent_email", sa.Boolean),
    sa.Column("consent_in_app", sa.Boolean),
    sa.Column("owner_csm_id", sa.Text),
    sa.Column("owner_csm_email", sa.Text),
    sa.Column("profile", JSONB),
    sa.Column("profile_at", TS),
)

scores = sa.Table(
    "scores",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("as_of", TS),
    sa.Column("risk_score", sa.Float),
    sa.Column("tier", sa.Text),
    sa.Column("churn_probability", sa.Float),
    sa.Column("snapshot", JSONB),
)

journeys = sa.Table(
    "journeys",
    metadata,
    sa.Column("journey_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text),
    sa.Column("playbook", sa.Text),
    sa.Column("state", sa.Text),
    sa.Column("variant", sa.Text),
    sa.Column("started_at", TS),
    sa.Column("ended_at", TS),
    sa.Column("exit_reason", sa.Text),
    sa.Column("arm", sa.Text),  # 0003: treatment or control (holdout)
    sa.Column("seen", ARRAY(sa.Text)),  # 0003: names waited for, seen during the journey
    sa.Column("paused_by", sa.Text),  # 0003: operator or playbook, while paused
)

journey_transitions = sa.Table(
    "journey_transitions",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("journey_id", sa.Text),
    sa.Column("from_state", sa.Text),
    sa.Column("to_state", sa.Text),
    sa.Column("event", sa.Text),
    sa.Column("at", TS),
    sa.Column("detail", JSONB),
)

timers = sa.Table(
    "timers",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("journey_id", sa.Text),
    sa.Column("step", sa.Text),
    sa.Column("due_at", TS),
    sa.Column("status", sa.Text),
    sa.Column("fired_at", TS),
    sa.Column("waiting_since", TS),  # 0007: deferred for a cap slot, waiting since
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("topic", sa.Text),
    sa.Column("key", sa.Text),
    sa.Column("payload", sa.LargeBinary),
    sa.Column("headers", JSONB),
    sa.Column("created_at", TS),
    sa.Column("published_at", TS),
)

# 0003: what the orchestrator learns about a customer besides its profile.
customer_state = sa.Table(
    "customer_state",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("segment", sa.Text),
    sa.Column("loyalty_tier", sa.Text),
    sa.Column("plan", sa.Text),
    sa.Column("plan_at", TS),
    sa.Column("unsubscribed_at", TS),
    sa.Column("subscription", sa.Text),
    sa.Column("subscription_at", TS),
    sa.Column("products", ARRAY(sa.Text)),
)

# 0003: durable timers of "signal held N days" triggers.
held_triggers = sa.Table(
    "held_triggers",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("customer_id", sa.Text),
    sa.Column("playbook", sa.Text),
    sa.Column("signal", sa.Text),
    sa.Column("armed_at", TS),
    sa.Column("due_at", TS),  # 0007: NULL while blocked
    sa.Column("status", sa.Text),
    sa.Column("blocked_by", sa.Text),  # 0007: retention first or cancelled, until it lifts
)

# 0003: playbooks paused by an operator.
paused_playbooks = sa.Table(
    "paused_playbooks",
    metadata,
    sa.Column("playbook", sa.Text, primary_key=True),
    sa.Column("paused_at", TS),
    sa.Column("paused_by", sa.Text),
)

# 0006: conversions attributed to a journey, with their revenue (one per event and playbook).
attributions = sa.Table(
    "attributions",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("playbook", sa.Text, primary_key=True),
    sa.Column("journey_id", sa.Text),
    sa.Column("customer_id", sa.Text),
    sa.Column("arm", sa.Text),
    sa.Column("variant", sa.Text),
    sa.Column("event_type", sa.Text),
    sa.Column("revenue", sa.Numeric(14, 2)),
    sa.Column("currency", sa.Text),
    sa.Column("converted_at", TS),
    sa.Column("recorded_at", TS),
)

# 0007: every customer message a step asked for, one per (journey, step), and what
# became of it; ``counts_at`` is when the frequency cap counts it (NULL: not counted).
journey_messages = sa.Table(
    "journey_messages",
    metadata,
    sa.Column("journey_id", sa.Text, primary_key=True),
    sa.Column("step", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text),
    sa.Column("marketing", sa.Boolean),
    sa.Column("decided_at", TS),
    sa.Column("outcome", sa.Text),
    sa.Column("outcome_at", TS),
    sa.Column("counts_at", TS),
)
