"""Notifier: the ``unknown`` outcome joins the unreported-outcomes index.

``unknown`` (issue 13): an email handed to the mail server by a worker that died before
it logged the answer, not sent again (``TENURE_NOTIFIER_EMAIL_RESEND_AFTER_CRASH``). It
is terminal and reported on ``deliveries`` like the others, so the partial index the
retry worker reads unreported outcomes through must cover it. (``handed``, the status of
an email being given to the mail server, needs no schema change: statuses are text.)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _unreported(statuses: str) -> None:
    op.create_index(
        "deliveries_unreported",
        "deliveries",
        ["updated_at"],
        postgresql_where=sa.text(f"reported_at IS NULL AND status IN ({statuses})"),
    )


def upgrade() -> None:
    op.drop_index("deliveries_unreported", table_name="deliveries")
    _unreported("'sent', 'suppressed', 'bounced', 'dead', 'unknown'")


def downgrade() -> None:
    op.drop_index("deliveries_unreported", table_name="deliveries")
    _unreported("'sent', 'suppressed', 'bounced', 'dead'")
