"""Portfolio analytics (issue 17): every MRR movement, and each subscription over time.

- ``mrr_movements``: one row per payment event that moved a customer's MRR (new,
  expansion, contraction, churn, reactivation), keyed by the event id, with the amount
  (positive), currency, plans and MRR before and after, and the event's time.
- ``subscription_states``: one row per payment event that changed a subscription, with
  the state (active, cancelled, reactivated), plan, MRR and currency after it.
- ``subscription_events``: the payment events of those types as sent, from which the
  two tables above are derived (a late event re-derives the rows after it).

Both are written by the orchestrator's analytics consumer and rebuilt by
``tenure analytics rebuild``.

Revision ID: 0010_mrr_movements
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_mrr_movements"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscription_events",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("plan", sa.Text),
        sa.Column("amount", sa.Numeric()),
        sa.Column("currency", sa.Text),
        sa.Column("mrr_before", sa.Numeric()),
        sa.Column("mrr_after", sa.Numeric()),
    )
    op.create_index(
        "subscription_events_customer",
        "subscription_events",
        ["customer_id", "occurred_at", "event_id"],
    )
    op.create_table(
        "mrr_movements",
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
        sa.CheckConstraint(
            "kind IN ('new', 'expansion', 'contraction', 'churn', 'reactivation')",
            name="mrr_movements_kind_known",
        ),
        sa.CheckConstraint("amount > 0", name="mrr_movements_amount_positive"),
    )
    op.create_index("mrr_movements_occurred_at", "mrr_movements", ["occurred_at"])
    op.create_index("mrr_movements_customer", "mrr_movements", ["customer_id", "occurred_at"])
    op.create_table(
        "subscription_states",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("plan", sa.Text),
        sa.Column("mrr", sa.Numeric(12, 2), nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("mrr_when_cancelled", sa.Numeric(12, 2), nullable=False, server_default="0"),
        sa.Column("occurred_at", TS, nullable=False),
        sa.CheckConstraint(
            "state IN ('active', 'cancelled', 'reactivated')", name="subscription_states_known"
        ),
    )
    op.create_index(
        "subscription_states_customer",
        "subscription_states",
        ["customer_id", "occurred_at", "event_id"],
    )
    op.create_index("subscription_states_occurred_at", "subscription_states", ["occurred_at"])


def downgrade() -> None:
    op.drop_index("subscription_states_occurred_at", table_name="subscription_states")
    op.drop_index("subscription_states_customer", table_name="subscription_states")
    op.drop_table("subscription_states")
    op.drop_index("mrr_movements_customer", table_name="mrr_movements")
    op.drop_index("mrr_movements_occurred_at", table_name="mrr_movements")
    op.drop_table("mrr_movements")
    op.drop_index("subscription_events_customer", table_name="subscription_events")
    op.drop_table("subscription_events")
