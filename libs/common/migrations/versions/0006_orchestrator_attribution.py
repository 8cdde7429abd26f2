"""Orchestrator attribution: conversions and their revenue, per journey.

- ``attributions``: a payment event that met a playbook's goal inside the attribution
  window of one of the customer's journeys of that playbook, with the revenue the
  playbook's rule read off it (``orchestrator.domain.attribution``). The primary key
  (event id, playbook) makes recording idempotent: a replayed payment record adds
  nothing, and one event counts at most once per playbook.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "attributions",
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
    )
    op.create_index("attributions_playbook", "attributions", ["playbook", "arm"])
    op.create_index("attributions_journey", "attributions", ["journey_id"])


def downgrade() -> None:
    op.drop_table("attributions")
