"""Foundation: customer projections, journeys, timers, outbox, delivery log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "customers",
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
        sa.Column("profile", JSONB, nullable=False, server_default="{}"),
        sa.Column("profile_at", TS, nullable=False),
    )
    op.create_table(
        "scores",
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("as_of", TS, nullable=False),
        sa.Column("risk_score", sa.Float, nullable=False),
        sa.Column("tier", sa.Text, nullable=False),
        sa.Column("churn_probability", sa.Float, nullable=False),
        sa.Column("snapshot", JSONB, nullable=False),
    )
    op.create_table(
        "journeys",
        sa.Column("journey_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("playbook", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("variant", sa.Text),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS),
        sa.Column("exit_reason", sa.Text),
    )
    # One live journey per playbook per customer, enforced by the database.
    op.create_index(
        "journeys_one_live",
        "journeys",
        ["customer_id", "playbook"],
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_index("journeys_customer", "journeys", ["customer_id", "playbook", "started_at"])
    op.create_table(
        "journey_transitions",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("journey_id", sa.Text, sa.ForeignKey("journeys.journey_id"), nullable=False),
        sa.Column("from_state", sa.Text),
        sa.Column("to_state", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("detail", JSONB, nullable=False, server_default="{}"),
    )
    op.create_index("journey_transitions_journey", "journey_transitions", ["journey_id", "id"])
    op.create_table(
        "timers",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("journey_id", sa.Text, sa.ForeignKey("journeys.journey_id"), nullable=False),
        sa.Column("step", sa.Text, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("fired_at", TS),
        sa.UniqueConstraint("journey_id", "step", name="timers_one_per_step"),
    )
    op.create_index(
        "timers_due", "timers", ["due_at"], postgresql_where=sa.text("status = 'pending'")
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("headers", JSONB, nullable=False, server_default="{}"),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", TS),
    )
    op.create_index(
        "outbox_unpublished", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_table(
        "deliveries",
        sa.Column("notification_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("detail", sa.Text),
    )


def downgrade() -> None:
    for table in (
        "deliveries",
        "outbox",
        "timers",
        "journey_transitions",
        "journeys",
        "scores",
        "customers",
    ):
        op.drop_table(table)
