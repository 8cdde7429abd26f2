"""The business latency: a journey keeps the ingest instant of the event that started it.

- ``journeys.ingested_at``: when ingest accepted the event whose fact (a score snapshot,
  a signal change, an event) started the journey; NULL for a journey started otherwise
  (a held-signal or postponed trigger), paused since, or started before this release.
  The orchestrator puts it on the notification a step sends as the immediate reaction
  (the ``ingested_at`` header), and the notifier observes the event-to-send latency.
- ``deliveries.ingested_at``: the same instant, kept by the notifier's delivery log so
  that a notification sent on a retry (or after a worker's crash) is observed too.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.add_column("journeys", sa.Column("ingested_at", TS))
    op.add_column("deliveries", sa.Column("ingested_at", TS))


def downgrade() -> None:
    op.drop_column("deliveries", "ingested_at")
    op.drop_column("journeys", "ingested_at")
