"""The business latency: a journey keeps the ingest instant of the event that started it.

- ``journeys.ingested_at``: when ingest accepted the event whose fact (a score snapshot,
  a signal change, an event) started the journey; NULL for a journey started otherwise
  (a held-signal or postponed trigger), paused since, or started before this release.
  The orchestrator puts it on the notification a step sends as the immediate reaction
  (the ``ingested_at`` header), and the notifier observes the event-to-send latency.

Revision ID: 0012
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("journeys", sa.Column("ingested_at", sa.TIMESTAMP(timezone=True)))


def downgrade() -> None:
    op.drop_column("journeys", "ingested_at")
