"""Orchestrator operations: timer leases and a backstop against a step sent twice.

- ``timers.lease_owner`` / ``lease_until``: a replica claims due timers for a while
  (``TENURE_ORCHESTRATOR_TIMER_LEASE_S``) before it fires them; until the lease runs
  out no other replica takes them, after it any replica may (see
  ``orchestrator.adapters.timer_store``). ``lease_until`` is on the database's clock.
- ``timers.attempts`` / ``last_error``: how many times a timer was claimed, and why
  its last firing failed; after ``TENURE_ORCHESTRATOR_TIMER_MAX_ATTEMPTS`` it is
  marked ``failed`` instead of being retried forever.
- A unique index on the outbox's notification id: whatever happens upstream, the
  database refuses a second outbox row for the same journey step.
- The operator API: ``outbox (key, id)`` to list a customer's messages, and
  ``message_outcomes``, every outcome the notifier reported for a notification
  (projected from the deliveries topic; one row per status, the first seen).
- ``relay_checkpoint``: per topic partition, the offset after the last batch the outbox
  relay marked published, committed with the mark; a new relay reads the topic from
  there to find a batch its predecessor published but did not mark.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.add_column("timers", sa.Column("lease_owner", sa.Text))
    op.add_column("timers", sa.Column("lease_until", TS))
    op.add_column("timers", sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
    op.add_column("timers", sa.Column("last_error", sa.Text))
    op.create_index(
        "outbox_one_per_notification",
        "outbox",
        [sa.text("(headers->>'notification_id')")],
        unique=True,  # rows without a notification id hold NULL there: never a conflict
    )
    op.create_index("outbox_customer", "outbox", ["key", "id"])
    op.create_table(
        "relay_checkpoint",
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "message_outcomes",
        sa.Column("notification_id", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("detail", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("relay_checkpoint")
    op.drop_table("message_outcomes")
    op.drop_index("outbox_customer", table_name="outbox")
    op.drop_index("outbox_one_per_notification", table_name="outbox")
    for column in ("last_error", "attempts", "lease_until", "lease_owner"):
        op.drop_column("timers", column)
