"""portfolio_customers_monthly ends each month in UTC, whatever the session's time zone.

0010 ended a month at ``month_start + interval '1 month'``, which PostgreSQL adds in the
session's time zone: west of UTC, the window of a month that follows a shorter one
missed its last day (May's ended on 31 May 00:00 UTC in America/New_York), so a customer
cancelled that day was counted lost in no month. The view is replaced with the same
columns; ``portfolio_churn_monthly`` (0011), which reads it, follows.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# As in 0010 (a migration is a frozen snapshot, so the text is repeated here).
_MONTHS = """
    SELECT generate_series(
        date_trunc('month', min(occurred_at) AT TIME ZONE 'UTC'),
        date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month',
        interval '1 month'
    ) AT TIME ZONE 'UTC' AS month_start
    FROM subscription_states
"""
_LATEST = """
    SELECT DISTINCT ON (customer_id) customer_id, state, mrr, currency
    FROM subscription_states WHERE occurred_at < {t}
    ORDER BY customer_id, occurred_at DESC, event_id DESC
"""
_VIEW = """
    CREATE OR REPLACE VIEW portfolio_customers_monthly AS
    WITH months AS ({months})
    SELECT m.month_start, count(*) AS at_start,
           count(*) FILTER (WHERE e.state = 'cancelled') AS lost
    FROM months m
    CROSS JOIN LATERAL ({at_start}) s
    JOIN LATERAL ({at_end}) e ON e.customer_id = s.customer_id
    WHERE s.state <> 'cancelled'
    GROUP BY 1
"""
_UTC_END = "((m.month_start AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC'"
_SESSION_END = "m.month_start + interval '1 month'"  # 0010's


def _view(end: str) -> str:
    return _VIEW.format(
        months=_MONTHS,
        at_start=_LATEST.format(t="m.month_start"),
        at_end=_LATEST.format(t=end),
    )


def upgrade() -> None:
    op.execute(_view(_UTC_END))


def downgrade() -> None:
    op.execute(_view(_SESSION_END))
