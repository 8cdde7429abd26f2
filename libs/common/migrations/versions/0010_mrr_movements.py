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

Views over them for dashboards and reports (plain SQL, one row per month and currency
where monthly; months are calendar months in UTC, the session's time zone aside):

- ``portfolio_mrr_monthly``: each month's MRR at its start and the movements in it by
  kind (new, reactivation, expansion, contraction, churned, upgrades), per currency.
- ``portfolio_customers_monthly``: customers live at each month's start and, of those,
  cancelled at its end (lost).
- ``portfolio_at_risk``: each scored customer's MRR, currency, churn probability and MRR
  at risk, tier, health band, CLV segment and plan, now.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)

# Month starts (UTC) from the first recorded subscription event to the month after now.
_MONTHS = """
    SELECT generate_series(
        date_trunc('month', min(occurred_at) AT TIME ZONE 'UTC'),
        date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month',
        interval '1 month'
    ) AT TIME ZONE 'UTC' AS month_start
    FROM subscription_states
"""
# Each customer's latest subscription row before :t.
_LATEST = """
    SELECT DISTINCT ON (customer_id) customer_id, state, mrr, currency
    FROM subscription_states WHERE occurred_at < {t}
    ORDER BY customer_id, occurred_at DESC, event_id DESC
"""
VIEWS = {
    "portfolio_mrr_monthly": f"""
        WITH months AS ({_MONTHS}),
        opening AS (
            SELECT m.month_start, s.currency, sum(s.mrr) AS mrr_start
            FROM months m CROSS JOIN LATERAL ({_LATEST.format(t="m.month_start")}) s
            GROUP BY 1, 2),
        moved AS (
            SELECT date_trunc('month', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                       AS month_start, currency,
                   sum(amount) FILTER (WHERE kind = 'new') AS new,
                   sum(amount) FILTER (WHERE kind = 'reactivation') AS reactivation,
                   sum(amount) FILTER (WHERE kind = 'expansion') AS expansion,
                   sum(amount) FILTER (WHERE kind = 'contraction') AS contraction,
                   sum(amount) FILTER (WHERE kind = 'churn') AS churned,
                   count(*) FILTER (WHERE kind = 'expansion') AS upgrades
            FROM mrr_movements GROUP BY 1, 2)
        SELECT month_start, currency,
               coalesce(o.mrr_start, 0) AS mrr_start, coalesce(v.new, 0) AS new,
               coalesce(v.reactivation, 0) AS reactivation,
               coalesce(v.expansion, 0) AS expansion,
               coalesce(v.contraction, 0) AS contraction, coalesce(v.churned, 0) AS churned,
               coalesce(v.upgrades, 0) AS upgrades
        FROM opening o FULL JOIN moved v USING (month_start, currency)
    """,
    "portfolio_customers_monthly": f"""
        WITH months AS ({_MONTHS})
        SELECT m.month_start, count(*) AS at_start,
               count(*) FILTER (WHERE e.state = 'cancelled') AS lost
        FROM months m
        CROSS JOIN LATERAL ({_LATEST.format(t="m.month_start")}) s
        JOIN LATERAL ({_LATEST.format(t="m.month_start + interval '1 month'")}) e
             ON e.customer_id = s.customer_id
        WHERE s.state <> 'cancelled'
        GROUP BY 1
    """,
    "portfolio_at_risk": """
        SELECT s.customer_id, coalesce(sub.mrr, c.mrr, 0) AS mrr,
               coalesce(sub.currency, c.profile->>'currency') AS currency,
               s.churn_probability,
               coalesce(sub.mrr, c.mrr, 0) * s.churn_probability::numeric AS mrr_at_risk,
               s.tier, s.snapshot->>'health_band' AS health_band,
               s.snapshot->>'clv_segment' AS clv_segment,
               coalesce(cs.plan, c.plan, s.snapshot->>'plan') AS plan,
               coalesce(sub.state, cs.subscription) AS subscription
        FROM scores s
        LEFT JOIN customers c USING (customer_id)
        LEFT JOIN customer_state cs USING (customer_id)
        LEFT JOIN LATERAL (
            SELECT state, mrr, currency FROM subscription_states st
            WHERE st.customer_id = s.customer_id
            ORDER BY occurred_at DESC, event_id DESC LIMIT 1) sub ON true
    """,
}


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
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
    op.drop_index("subscription_states_occurred_at", table_name="subscription_states")
    op.drop_index("subscription_states_customer", table_name="subscription_states")
    op.drop_table("subscription_states")
    op.drop_index("mrr_movements_customer", table_name="mrr_movements")
    op.drop_index("mrr_movements_occurred_at", table_name="mrr_movements")
    op.drop_table("mrr_movements")
    op.drop_index("subscription_events_customer", table_name="subscription_events")
    op.drop_table("subscription_events")
