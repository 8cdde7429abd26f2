"""Every table of Tenure's one PostgreSQL database, declared once (SQLAlchemy Core).

This metadata is the schema's source: the services read and write through these tables,
Alembic's ``env.py`` compares against it (its autogenerate drafts the next migration from
a change here), and ``tests/integration/test_schema.py`` fails when the migrated
database (``common/migrations``) differs from it. A schema change is therefore two edits
in one commit: the declaration here and a migration.

Each section says which service writes its tables. Types, nullability, server defaults, keys,
check constraints and indexes (partial ones with their predicate) are exactly what the
migrations create; unnamed primary keys, foreign keys and unique constraints get
PostgreSQL's default names (``<table>_pkey``, ``<table>_<column>_fkey``,
``<table>_<column>_key``) both ways.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = sa.MetaData()

TS = sa.TIMESTAMP(timezone=True)
EMPTY_JSON = sa.text("'{}'::jsonb")
EMPTY_ARRAY = sa.text("'{}'::text[]")
# The predicate of the partial indexes over pending timers and held triggers.
PENDING = sa.text("status = 'pending'")


# --- read models the orchestrator projects from Kafka (profiles, scores) ----------------

# The latest profile of each customer (``profiles`` topic).
customers = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("email", sa.Text),
    sa.Column("first_name", sa.Text),
    sa.Column("time_zone", sa.Text),
    sa.Column("plan", sa.Text),
    sa.Column("mrr", sa.Numeric(12, 2)),
    sa.Column("consent_email", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("consent_in_app", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("owner_csm_id", sa.Text),
    sa.Column("owner_csm_email", sa.Text),
    sa.Column("profile", JSONB, nullable=False, server_default=EMPTY_JSON),
    sa.Column("profile_at", TS, nullable=False),
)

# The latest score of each customer (``scores`` topic).
scores = sa.Table(
    "scores",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("as_of", TS, nullable=False),
    sa.Column("risk_score", sa.Float, nullable=False),
    sa.Column("tier", sa.Text, nullable=False),
    sa.Column("churn_probability", sa.Float, nullable=False),
    sa.Column("snapshot", JSONB, nullable=False),
)

# What the orchestrator learns about a customer besides its profile: CLV segment and
# loyalty tier (signals), an unsubscribe (deliveries), products, plan and subscription.
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
    sa.Column("products", ARRAY(sa.Text), nullable=False, server_default=EMPTY_ARRAY),
)

# --- orchestrator: journeys, their history, timers, the outbox ----------------------------

journeys = sa.Table(
    "journeys",
    metadata,
    sa.Column("journey_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("playbook", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("variant", sa.Text),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("ended_at", TS),
    sa.Column("exit_reason", sa.Text),
    # treatment or control (the holdout, which sends nothing)
    sa.Column("arm", sa.Text, nullable=False, server_default="treatment"),
    # names a step's wait-for-event waits for, seen during the journey
    sa.Column("seen", ARRAY(sa.Text), nullable=False, server_default=EMPTY_ARRAY),
    # operator or playbook, while paused
    sa.Column("paused_by", sa.Text),
    # ingest instant of the event whose fact started it; NULL: none (migration 0012)
    sa.Column("ingested_at", TS),
    sa.CheckConstraint(
        "state IN ('active', 'paused', 'completed', 'exited', 'cancelled')",
        name="journeys_state_known",
    ),
    sa.CheckConstraint(
        "(ended_at IS NULL) = (state IN ('active', 'paused'))", name="journeys_ended_iff_final"
    ),
    # One live journey per playbook per customer, enforced by the database.
    sa.Index(
        "journeys_one_live",
        "customer_id",
        "playbook",
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL"),
    ),
    sa.Index("journeys_customer", "customer_id", "playbook", "started_at"),
)

# The declared journey machine's history: one row per transition.
journey_transitions = sa.Table(
    "journey_transitions",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("journey_id", sa.Text, sa.ForeignKey("journeys.journey_id"), nullable=False),
    sa.Column("from_state", sa.Text),
    sa.Column("to_state", sa.Text, nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("at", TS, nullable=False),
    sa.Column("detail", JSONB, nullable=False, server_default=EMPTY_JSON),
    sa.Index("journey_transitions_journey", "journey_id", "id"),
    sa.Index(
        "journey_transitions_sent",
        "journey_id",
        "at",
        postgresql_where=sa.text("event = 'step_sent'"),
    ),
)

# A journey's steps as durable timers, claimed by a replica under a lease
# (``orchestrator.adapters.timer_store``).
timers = sa.Table(
    "timers",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("journey_id", sa.Text, sa.ForeignKey("journeys.journey_id"), nullable=False),
    sa.Column("step", sa.Text, nullable=False),
    # NULL: timed from an earlier step's send (``from``), not known until it is sent
    sa.Column("due_at", TS),
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("fired_at", TS),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_until", TS),  # on the database's clock
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    # a marketing step deferred for a cap slot: when it first came due (ranks the waiters)
    sa.Column("waiting_since", TS),
    sa.UniqueConstraint("journey_id", "step", name="timers_one_per_step"),
    sa.Index("timers_due", "due_at", postgresql_where=PENDING),
    # Few timers wait for a cap slot: waking a customer's is one probe of a small index.
    sa.Index(
        "timers_waiting",
        "journey_id",
        postgresql_where=sa.text("waiting_since IS NOT NULL AND status = 'pending'"),
    ),
)

# Transactional outbox: rows written with the state change, published by the relay.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("headers", JSONB, nullable=False, server_default=EMPTY_JSON),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("published_at", TS),
    sa.Index("outbox_unpublished", "id", postgresql_where=sa.text("published_at IS NULL")),
    # Whatever happens upstream, never a second row for one notification (rows without a
    # notification id hold NULL there: never a conflict).
    sa.Index("outbox_one_per_notification", sa.text("(headers->>'notification_id')"), unique=True),
    sa.Index("outbox_customer", "key", "id"),
)

# Per topic partition, the offset after the last batch the relay marked published.
relay_checkpoint = sa.Table(
    "relay_checkpoint",
    metadata,
    sa.Column("topic", sa.Text, primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
)

# "Signal held N days" triggers: a durable timer, cancelled by signal_off.
held_triggers = sa.Table(
    "held_triggers",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("playbook", sa.Text, nullable=False),
    sa.Column("signal", sa.Text, nullable=False),
    sa.Column("armed_at", TS, nullable=False),
    sa.Column("due_at", TS),  # NULL while blocked
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("blocked_by", sa.Text),  # ``retention first`` or ``cancelled``, until it lifts
    sa.CheckConstraint("status IN ('pending', 'fired', 'cancelled')", name="held_triggers_status"),
    sa.Index(
        "held_triggers_one_pending",
        "customer_id",
        "playbook",
        unique=True,
        postgresql_where=PENDING,
    ),
    sa.Index("held_triggers_due", "due_at", postgresql_where=PENDING),
    # Few triggers are blocked: lifting a customer's is one probe of a small index.
    sa.Index(
        "held_triggers_blocked",
        "customer_id",
        postgresql_where=sa.text("blocked_by IS NOT NULL AND status = 'pending'"),
    ),
    sa.Index("held_triggers_customer", "customer_id"),  # export and erasure (0015)
)

# Playbooks an operator paused (no new journeys, steps wait).
paused_playbooks = sa.Table(
    "paused_playbooks",
    metadata,
    sa.Column("playbook", sa.Text, primary_key=True),
    sa.Column("paused_at", TS, nullable=False),
    sa.Column("paused_by", sa.Text, nullable=False, server_default="operator"),
)

# Conversions attributed to a journey, with their revenue: one per event and playbook.
attributions = sa.Table(
    "attributions",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("playbook", sa.Text, primary_key=True),
    sa.Column("journey_id", sa.Text, sa.ForeignKey("journeys.journey_id"), nullable=False),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("arm", sa.Text, nullable=False),
    sa.Column("variant", sa.Text),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("revenue", sa.Numeric(14, 2), nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("converted_at", TS, nullable=False),
    sa.Column("recorded_at", TS, nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("revenue >= 0", name="attributions_revenue_not_negative"),
    sa.Index("attributions_playbook", "playbook", "arm"),
    sa.Index("attributions_journey", "journey_id"),
    sa.Index("attributions_customer", "customer_id"),  # export and erasure (0015)
)

# --- orchestrator: portfolio analytics (issue 17) -----------------------------------------

MOVEMENT_KINDS = "kind IN ('new', 'expansion', 'contraction', 'churn', 'reactivation')"

# Every MRR movement, one per payment event that moved a customer's MRR (the event id);
# ``amount`` is positive, ``kind`` gives the direction (orchestrator.domain.movements).
mrr_movements = sa.Table(
    "mrr_movements",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("amount", sa.Numeric(12, 2), nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("plan_before", sa.Text),
    sa.Column("plan_after", sa.Text),
    sa.Column("mrr_before", sa.Numeric(12, 2), nullable=False),
    sa.Column("mrr_after", sa.Numeric(12, 2), nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("occurred_at", TS, nullable=False),
    sa.Column("recorded_at", TS, nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint(MOVEMENT_KINDS, name="mrr_movements_kind_known"),
    sa.CheckConstraint("amount > 0", name="mrr_movements_amount_positive"),
    sa.Index("mrr_movements_occurred_at", "occurred_at"),
    sa.Index("mrr_movements_customer", "customer_id", "occurred_at"),
)

# Every payment event that may change a subscription, as sent (the input the two tables
# below are derived from, so that a late event re-derives what follows it).
subscription_events = sa.Table(
    "subscription_events",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("occurred_at", TS, nullable=False),
    sa.Column("plan", sa.Text),
    sa.Column("amount", sa.Numeric()),
    sa.Column("currency", sa.Text),
    sa.Column("mrr_before", sa.Numeric()),
    sa.Column("mrr_after", sa.Numeric()),
    sa.Index("subscription_events_customer", "customer_id", "occurred_at", "event_id"),
)

# Each customer's subscription over time: one row per payment event that changed it,
# with the state, plan, MRR and currency after it. The row before an instant is the
# customer's subscription then.
subscription_states = sa.Table(
    "subscription_states",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("plan", sa.Text),
    sa.Column("mrr", sa.Numeric(12, 2), nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    # the MRR a reactivation restores when its event names none
    sa.Column("mrr_when_cancelled", sa.Numeric(12, 2), nullable=False, server_default="0"),
    sa.Column("occurred_at", TS, nullable=False),
    sa.CheckConstraint(
        "state IN ('active', 'cancelled', 'reactivated')", name="subscription_states_known"
    ),
    sa.Index("subscription_states_customer", "customer_id", "occurred_at", "event_id"),
    sa.Index("subscription_states_occurred_at", "occurred_at"),
)

# Every customer message a step asked for, one per (journey, step), and what became of
# it; ``counts_at`` is when the frequency cap counts it (NULL: not counted).
journey_messages = sa.Table(
    "journey_messages",
    metadata,
    sa.Column("journey_id", sa.Text, sa.ForeignKey("journeys.journey_id"), primary_key=True),
    sa.Column("step", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("marketing", sa.Boolean, nullable=False),
    sa.Column("decided_at", TS, nullable=False),
    sa.Column("outcome", sa.Text),
    sa.Column("outcome_at", TS),
    sa.Column("counts_at", TS),
    sa.Index(
        "journey_messages_cap",
        "customer_id",
        "counts_at",
        postgresql_where=sa.text("counts_at IS NOT NULL"),
    ),
    sa.Index("journey_messages_customer", "customer_id"),  # export and erasure (0015)
)

# Every outcome the notifier reported for a notification (projected from the
# ``deliveries`` topic): one row per status, the first time it was seen.
message_outcomes = sa.Table(
    "message_outcomes",
    metadata,
    sa.Column("notification_id", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("occurred_at", TS, nullable=False),
    sa.Column("detail", sa.Text),
    sa.Index("message_outcomes_customer", "customer_id"),  # export and erasure (0015)
)

# One row per erasure of a customer: never the customer id, only its SHA-256.
erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("erasure_id", sa.Text, primary_key=True),
    sa.Column("customer_hash", sa.Text, nullable=False),
    sa.Column("pseudonym", sa.Text, nullable=False),
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("erased_at", TS, nullable=False),
    sa.Column("removed", JSONB, nullable=False, server_default=EMPTY_JSON),
    sa.Column("scoring_erased_at", TS),
    sa.Index("erasures_customer", "customer_hash", "erased_at"),
)

# What the business dashboard's views read of the orchestrator's settings, which they
# cannot read themselves (migration 0014): one row (``id`` is true), seeded with the
# settings' defaults and written by the orchestrator when it starts
# (``orchestrator.service_layer.portfolio.share_settings``). ``z`` is the two-sided normal
# quantile of ``confidence``, computed in Python (PostgreSQL has no inverse normal).
portfolio_settings = sa.Table(
    "portfolio_settings",
    metadata,
    sa.Column("id", sa.Boolean, primary_key=True, server_default=sa.true()),
    sa.Column("default_currency", sa.Text, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("z", sa.Float, nullable=False),
    sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("id", name="portfolio_settings_one_row"),
    sa.CheckConstraint(
        "confidence > 0 AND confidence < 1 AND z > 0", name="portfolio_settings_confidence"
    ),
)


# --- notifier: the delivery log, suppressions, the in-app inbox -----------------------

# One row per notification id; the orchestrator reads it (never writes) for the operator
# API. Statuses and their meaning: ``notifier.adapters.delivery_log``.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("notification_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("detail", sa.Text),
    sa.Column("payload", sa.LargeBinary),  # the notification itself, for retries
    sa.Column("first_attempt_at", TS),
    sa.Column("next_attempt_at", TS),
    # ingest instant of the event it reacts to, for the retries' latency (migration 0012)
    sa.Column("ingested_at", TS),
    # set once the outcome is on the deliveries topic, so a crash in between re-reports it
    sa.Column("reported_at", TS),
    sa.Index(
        "deliveries_retry_due", "next_attempt_at", postgresql_where=sa.text("status = 'retrying'")
    ),
    sa.Index("deliveries_customer", "customer_id"),  # export and erasure (0015)
    # Outcomes whose publish failed, re-published by the retry worker: normally none.
    sa.Index(
        "deliveries_unreported",
        "updated_at",
        postgresql_where=sa.text(
            "reported_at IS NULL AND status IN ('sent', 'suppressed', 'bounced', 'dead', 'unknown')"
        ),
    ),
)

# Addresses that must get no marketing email, by the SHA-256 of the normalised address.
suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("address_hash", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("notification_id", sa.Text),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Index("suppressions_customer", "customer_id"),
)

# The in-app inbox; ``id`` orders a customer's messages and is the server-sent-events
# cursor (``Last-Event-ID``).
inbox_messages = sa.Table(
    "inbox_messages",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("notification_id", sa.Text, nullable=False, unique=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("journey_id", sa.Text),
    sa.Column("playbook", sa.Text),
    sa.Column("step", sa.Text),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("read_at", TS),
    sa.Column("dismissed_at", TS),
    sa.Index("inbox_messages_customer", "customer_id", "id"),
)

# --- common: API keys ---------------------------------------------------------------------

# Stored as the SHA-256 of their secrets, never in plain text (``common.apikeys``).
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("scopes", ARRAY(sa.Text), nullable=False),
    sa.Column("secret_hash", sa.LargeBinary, nullable=False),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("revoked_at", TS),
    sa.CheckConstraint("cardinality(scopes) > 0", name="api_keys_has_scopes"),
    # A SHA-256 digest is 32 bytes: the database itself refuses a plain-text secret.
    sa.CheckConstraint("octet_length(secret_hash) = 32", name="api_keys_hash_is_sha256"),
)
