"""Playbooks under contention: cap slots, dependent steps, postponed triggers.

- ``journey_messages``: every customer message (email, in-app) a journey step asked for,
  one per (journey, step), with what became of it (``outcome``: sent, failed,
  suppressed or bounced, from the deliveries topic, and when). ``counts_at`` is the
  instant the frequency cap counts a marketing message at: its decision until the
  notifier reports it, its send time once sent, NULL once known not sent (the slot is
  released) and for a message the cap does not count. Backfilled from the step_sent
  history and the outcomes already projected.
- ``timers.due_at`` may be NULL: a step timed from an earlier step's send (``from`` in
  the playbook) has no due time until that step is sent or skipped.
- ``timers.waiting_since``: when a marketing step deferred for a cap slot first came
  due; it ranks the steps waiting for a slot (priority, then how long they waited).
- ``held_triggers.blocked_by`` (``retention first`` or ``cancelled``): a trigger a block
  postponed, with no due time until the block lifts.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "journey_messages",
        sa.Column("journey_id", sa.Text, sa.ForeignKey("journeys.journey_id"), primary_key=True),
        sa.Column("step", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("marketing", sa.Boolean, nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("outcome", sa.Text),
        sa.Column("outcome_at", TS),
        sa.Column("counts_at", TS),
    )
    op.create_index(
        "journey_messages_cap",
        "journey_messages",
        ["customer_id", "counts_at"],
        postgresql_where=sa.text("counts_at IS NOT NULL"),
    )
    op.execute(
        """
        INSERT INTO journey_messages
          (journey_id, step, customer_id, marketing, decided_at, counts_at)
        SELECT t.journey_id, t.detail->>'step', j.customer_id,
               coalesce((t.detail->>'marketing')::boolean, false), t.at,
               CASE WHEN coalesce((t.detail->>'marketing')::boolean, false) THEN t.at END
        FROM journey_transitions t JOIN journeys j USING (journey_id)
        WHERE t.event = 'step_sent' AND t.detail ? 'step'
        ON CONFLICT DO NOTHING
        """
    )
    op.execute(
        """
        UPDATE journey_messages m
        SET outcome = o.status, outcome_at = o.occurred_at,
            counts_at = CASE WHEN NOT m.marketing THEN NULL
                             WHEN o.status = 'sent' THEN o.occurred_at END
        FROM (SELECT DISTINCT ON (t.journey_id, t.detail->>'step')
                     t.journey_id, t.detail->>'step' AS step, mo.status, mo.occurred_at
              FROM journey_transitions t
              JOIN message_outcomes mo ON mo.notification_id = t.detail->>'notification_id'
              WHERE t.event = 'step_sent'
                AND mo.status IN ('sent', 'failed', 'suppressed', 'bounced')
              ORDER BY t.journey_id, t.detail->>'step', (mo.status = 'sent'),
                       mo.occurred_at DESC) AS o
        WHERE o.journey_id = m.journey_id AND o.step = m.step
        """
    )
    op.alter_column("timers", "due_at", nullable=True)
    op.add_column("timers", sa.Column("waiting_since", TS))
    # Few timers wait for a cap slot: waking a customer's is one probe of a small index.
    op.create_index(
        "timers_waiting",
        "timers",
        ["journey_id"],
        postgresql_where=sa.text("waiting_since IS NOT NULL AND status = 'pending'"),
    )
    op.alter_column("held_triggers", "due_at", nullable=True)
    op.add_column("held_triggers", sa.Column("blocked_by", sa.Text))
    # Few triggers are blocked: lifting a customer's is one probe of a small index.
    op.create_index(
        "held_triggers_blocked",
        "held_triggers",
        ["customer_id"],
        postgresql_where=sa.text("blocked_by IS NOT NULL AND status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("held_triggers_blocked", table_name="held_triggers")
    op.drop_column("held_triggers", "blocked_by")
    op.execute("DELETE FROM held_triggers WHERE due_at IS NULL")
    op.alter_column("held_triggers", "due_at", nullable=False)
    op.drop_index("timers_waiting", table_name="timers")
    op.drop_column("timers", "waiting_since")
    op.execute("UPDATE timers SET status = 'cancelled' WHERE due_at IS NULL")
    op.execute("UPDATE timers SET due_at = 'epoch' WHERE due_at IS NULL")
    op.alter_column("timers", "due_at", nullable=False)
    op.drop_table("journey_messages")
