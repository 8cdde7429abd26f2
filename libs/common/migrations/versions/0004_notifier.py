"""Notifier: suppression list, in-app inbox, webhook retries (filled by issue 6).

- ``suppressions``: addresses (and their customer) that must get no marketing email.
- ``inbox_messages``: the in-app inbox; ``id`` orders a customer's messages and is the
  server-sent-events cursor (``Last-Event-ID``).
- ``deliveries`` gains the durable retry schedule: the notification itself (``payload``),
  when it was first tried and when it is next due, both on the shared (simulated) clock.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("address", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("notification_id", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("suppressions_customer", "suppressions", ["customer_id"])
    op.create_table(
        "inbox_messages",
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
    )
    op.create_index("inbox_messages_customer", "inbox_messages", ["customer_id", "id"])
    op.add_column("deliveries", sa.Column("payload", sa.LargeBinary))
    op.add_column("deliveries", sa.Column("first_attempt_at", TS))
    op.add_column("deliveries", sa.Column("next_attempt_at", TS))
    # Set once the outcome is on the deliveries topic, so a crash in between re-reports it.
    op.add_column("deliveries", sa.Column("reported_at", TS))
    op.create_index(
        "deliveries_retry_due",
        "deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'retrying'"),
    )
    # Outcomes whose publish failed, re-published by the retry worker: normally none.
    op.create_index(
        "deliveries_unreported",
        "deliveries",
        ["updated_at"],
        postgresql_where=sa.text(
            "reported_at IS NULL AND status IN ('sent', 'suppressed', 'bounced', 'dead')"
        ),
    )


def downgrade() -> None:
    op.drop_index("deliveries_unreported", table_name="deliveries")
    op.drop_index("deliveries_retry_due", table_name="deliveries")
    for column in ("reported_at", "next_attempt_at", "first_attempt_at", "payload"):
        op.drop_column("deliveries", column)
    op.drop_table("inbox_messages")
    op.drop_table("suppressions")
