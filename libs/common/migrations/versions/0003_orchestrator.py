"""Orchestrator: playbooks as data (issue 5, part A).

- ``journeys.arm``: treatment or control (the holdout, which sends nothing);
  ``journeys.seen``: names a step's wait-for-event is waiting for, seen during the
  journey; ``journeys.paused_by``: operator or playbook, while paused.
- ``customer_state``: what the orchestrator learns about a customer besides its
  profile: CLV segment and loyalty tier (signals), an unsubscribe (deliveries),
  products bought, the latest plan change and subscription state (payment events).
- ``held_triggers``: a signal that must stay on for a while before its playbook
  starts ("engagement_low held 14 days"); a durable timer, cancelled by signal_off.
- ``paused_playbooks``: playbooks an operator paused (no new journeys, steps wait).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.add_column("journeys", sa.Column("arm", sa.Text, nullable=False, server_default="treatment"))
    op.add_column(
        "journeys",
        sa.Column("seen", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
    )
    op.add_column("journeys", sa.Column("paused_by", sa.Text))
    op.create_check_constraint(
        "journeys_state_known",
        "journeys",
        "state IN ('active', 'paused', 'completed', 'exited', 'cancelled')",
    )
    op.create_check_constraint(
        "journeys_ended_iff_final",
        "journeys",
        "(ended_at IS NULL) = (state IN ('active', 'paused'))",
    )
    op.create_table(
        "customer_state",
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("segment", sa.Text),
        sa.Column("loyalty_tier", sa.Text),
        sa.Column("plan", sa.Text),
        sa.Column("plan_at", TS),
        sa.Column("unsubscribed_at", TS),
        sa.Column("subscription", sa.Text),
        sa.Column("subscription_at", TS),
        sa.Column("products", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
    )
    op.create_table(
        "held_triggers",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("playbook", sa.Text, nullable=False),
        sa.Column("signal", sa.Text, nullable=False),
        sa.Column("armed_at", TS, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.CheckConstraint(
            "status IN ('pending', 'fired', 'cancelled')", name="held_triggers_status"
        ),
    )
    op.create_index(
        "held_triggers_one_pending",
        "held_triggers",
        ["customer_id", "playbook"],
        unique=True,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "held_triggers_due",
        "held_triggers",
        ["due_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "paused_playbooks",
        sa.Column("playbook", sa.Text, primary_key=True),
        sa.Column("paused_at", TS, nullable=False),
        sa.Column("paused_by", sa.Text, nullable=False, server_default="operator"),
    )
    # The frequency cap counts a customer's recent sent steps.
    op.create_index(
        "journey_transitions_sent",
        "journey_transitions",
        ["journey_id", "at"],
        postgresql_where=sa.text("event = 'step_sent'"),
    )


def downgrade() -> None:
    op.drop_index("journey_transitions_sent", table_name="journey_transitions")
    op.drop_table("paused_playbooks")
    op.drop_table("held_triggers")
    op.drop_table("customer_state")
    op.drop_constraint("journeys_ended_iff_final", "journeys")
    op.drop_constraint("journeys_state_known", "journeys")
    for column in ("paused_by", "seen", "arm"):
        op.drop_column("journeys", column)
