"""The business dashboard's read-only access (issue 17): views and a role that reads them.

Views over the MRR record and the journeys, one row per month (calendar months in UTC,
``month`` as ``YYYY-MM``) so that a dashboard's queries are one-liners; each figure is
the formula of ``orchestrator.domain.portfolio`` written in SQL (tests/integration/
test_portfolio_dashboard.py checks that they agree on the scripted month):

- ``portfolio_retention_monthly``: migration 0010's ``portfolio_mrr_monthly`` with the
  MRR at the month's end (the next month's start), NRR, GRR, expansion rate and average
  upgrade value, per currency.
- ``portfolio_mrr_waterfall``: the same month as the steps of a waterfall (start, new,
  reactivation, expansion, contraction, churned, end), each with the ``base`` it stands
  on and its ``rise`` or ``fall``, for a stacked bar chart.
- ``portfolio_churn_monthly``: customers live at the start, lost, churn rate monthly and
  annualised (1 - (1 - m)^12).
- ``portfolio_churn_by_plan``: the same by the plan each customer had at the start.
- ``portfolio_at_risk_summary``: live customers' MRR and MRR at risk now, by currency and
  risk tier (0010's ``portfolio_at_risk`` lists them one by one).
- ``portfolio_playbook_monthly``: per playbook and month of the journeys' start,
  treatment against holdout: journeys, conversions (a payment attributed to the journey),
  rates, uplift with its 95 % interval (two-proportion Wald, as ``uplift_interval``).
- ``portfolio_playbook_revenue_monthly``: attributed revenue per playbook, month and
  currency, treatment and control, and the incremental revenue
  ((treatment revenue / journeys - control revenue / journeys) x treatment journeys).

The role ``tenure_analytics`` (NOLOGIN) is created when it does not exist (roles belong
to the server, not to one database) and is granted USAGE on the schema and SELECT on
these views and 0010's, nothing else: a view reads its tables with its owner's rights,
so the role reads the figures and no row of a table. An operator gives a login user the
role (docs/operations.md, "The business dashboard"); the migration's user needs
CREATEROLE unless the role was created beforehand.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ROLE = "tenure_analytics"

# A timestamptz month start (UTC midnight on the 1st) as YYYY-MM, and the next month's
# start: computed in UTC whatever the session's time zone (Grafana's may not be UTC).
_MONTH = "to_char({t} AT TIME ZONE 'UTC', 'YYYY-MM')"
_NEXT = "(({t} AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC'"
_MONTHS = """
    SELECT generate_series(
        date_trunc('month', min(occurred_at) AT TIME ZONE 'UTC'),
        date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month',
        interval '1 month'
    ) AT TIME ZONE 'UTC' AS month_start
    FROM subscription_states
"""
# Each customer's latest subscription row (state and plan) before {t}.
_LATEST = """
    SELECT DISTINCT ON (customer_id) customer_id, state, plan
    FROM subscription_states WHERE occurred_at < {t}
    ORDER BY customer_id, occurred_at DESC, event_id DESC
"""
# The normal quantile of a two-sided 95 % interval: the dashboard's uplift intervals are
# 95 % ones, as the API's by default (OrchestratorSettings.portfolio_confidence).
Z95 = "1.959963984540054"

VIEWS = {
    "portfolio_retention_monthly": f"""
        SELECT m.month_start, {_MONTH.format(t="m.month_start")} AS month, m.currency,
               m.mrr_start, m.new, m.reactivation, m.expansion, m.contraction, m.churned,
               m.upgrades, coalesce(n.mrr_start, 0) AS mrr_end,
               ((m.mrr_start + m.expansion - m.contraction - m.churned)
                / nullif(m.mrr_start, 0))::float8 AS nrr,
               ((m.mrr_start - m.contraction - m.churned) / nullif(m.mrr_start, 0))::float8
                   AS grr,
               (m.expansion / nullif(m.mrr_start, 0))::float8 AS expansion_rate,
               round(m.expansion / nullif(m.upgrades, 0), 2) AS average_upgrade_value
        FROM portfolio_mrr_monthly m
        LEFT JOIN portfolio_mrr_monthly n
               ON n.currency = m.currency AND n.month_start = {_NEXT.format(t="m.month_start")}
        WHERE m.month_start <= now()
    """,
    "portfolio_mrr_waterfall": """
        SELECT r.month_start, r.month, r.currency, s.step_no, s.step, s.amount, s.base,
               s.rise, s.fall
        FROM portfolio_retention_monthly r
        CROSS JOIN LATERAL (
            SELECT r.mrr_start + r.new + r.reactivation + r.expansion AS top) t
        CROSS JOIN LATERAL (VALUES
            (1, 'start', r.mrr_start, 0, r.mrr_start, 0),
            (2, 'new', r.new, r.mrr_start, r.new, 0),
            (3, 'reactivation', r.reactivation, r.mrr_start + r.new, r.reactivation, 0),
            (4, 'expansion', r.expansion, t.top - r.expansion, r.expansion, 0),
            (5, 'contraction', -r.contraction, t.top - r.contraction, 0, r.contraction),
            (6, 'churned', -r.churned, t.top - r.contraction - r.churned, 0, r.churned),
            (7, 'end', r.mrr_end, 0, r.mrr_end, 0)
        ) s(step_no, step, amount, base, rise, fall)
    """,
    "portfolio_churn_monthly": f"""
        SELECT month_start, {_MONTH.format(t="month_start")} AS month, at_start, lost,
               (lost::float8 / nullif(at_start, 0)) AS churn_rate,
               1 - power(1 - lost::float8 / nullif(at_start, 0), 12) AS annual_churn
        FROM portfolio_customers_monthly
        WHERE month_start <= now()
    """,
    "portfolio_churn_by_plan": f"""
        WITH months AS ({_MONTHS})
        SELECT m.month_start, {_MONTH.format(t="m.month_start")} AS month,
               coalesce(s.plan, 'unknown') AS plan, count(*) AS at_start,
               count(*) FILTER (WHERE e.state = 'cancelled') AS lost,
               count(*) FILTER (WHERE e.state = 'cancelled')::float8 / count(*) AS churn_rate
        FROM months m
        CROSS JOIN LATERAL ({_LATEST.format(t="m.month_start")}) s
        JOIN LATERAL ({_LATEST.format(t=_NEXT.format(t="m.month_start"))}) e
             ON e.customer_id = s.customer_id
        WHERE s.state <> 'cancelled' AND m.month_start <= now()
        GROUP BY 1, 2, 3
    """,
    "portfolio_at_risk_summary": """
        SELECT currency, tier, count(*) AS customers, sum(mrr) AS mrr,
               sum(mrr_at_risk) AS mrr_at_risk
        FROM portfolio_at_risk
        WHERE subscription IS DISTINCT FROM 'cancelled'
        GROUP BY 1, 2
    """,
    "portfolio_playbook_monthly": f"""
        WITH j AS (
            SELECT date_trunc('month', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                       AS month_start,
                   playbook, arm,
                   EXISTS (SELECT FROM attributions a WHERE a.journey_id = j.journey_id
                                                      AND a.playbook = j.playbook) AS converted
            FROM journeys j),
        c AS (
            SELECT month_start, playbook,
                   count(*) FILTER (WHERE arm <> 'control') AS journeys,
                   count(*) FILTER (WHERE arm <> 'control' AND converted) AS conversions,
                   count(*) FILTER (WHERE arm = 'control') AS control_journeys,
                   count(*) FILTER (WHERE arm = 'control' AND converted)
                       AS control_conversions
            FROM j GROUP BY 1, 2),
        r AS (
            SELECT *, conversions::float8 / nullif(journeys, 0) AS p_t,
                   control_conversions::float8 / nullif(control_journeys, 0) AS p_c
            FROM c),
        u AS (
            SELECT *, p_t - p_c AS uplift,
                   sqrt(p_t * (1 - p_t) / journeys + p_c * (1 - p_c) / control_journeys) AS se
            FROM r)
        SELECT month_start, {_MONTH.format(t="month_start")} AS month, playbook, journeys,
               conversions, control_journeys, control_conversions,
               p_t AS conversion_rate, p_c AS control_conversion_rate, uplift,
               uplift - {Z95} * se AS uplift_low, uplift + {Z95} * se AS uplift_high
        FROM u
    """,
    "portfolio_playbook_revenue_monthly": f"""
        WITH j AS (
            SELECT journey_id, playbook,
                   date_trunc('month', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                       AS month_start,
                   arm = 'control' AS control
            FROM journeys),
        n AS (
            SELECT month_start, playbook, count(*) FILTER (WHERE NOT control) AS journeys,
                   count(*) FILTER (WHERE control) AS control_journeys
            FROM j GROUP BY 1, 2),
        money AS (
            SELECT j.month_start, j.playbook, a.currency,
                   coalesce(sum(a.revenue) FILTER (WHERE NOT j.control), 0) AS revenue,
                   coalesce(sum(a.revenue) FILTER (WHERE j.control), 0) AS control_revenue
            FROM attributions a JOIN j ON j.journey_id = a.journey_id
                                      AND j.playbook = a.playbook
            GROUP BY 1, 2, 3)
        SELECT m.month_start, {_MONTH.format(t="m.month_start")} AS month, m.playbook,
               m.currency, n.journeys, n.control_journeys, m.revenue, m.control_revenue,
               round((m.revenue / nullif(n.journeys, 0)
                      - m.control_revenue / nullif(n.control_journeys, 0)) * n.journeys, 2)
                   AS incremental_revenue
        FROM money m JOIN n USING (month_start, playbook)
    """,
}
# What the role reads: these views and migration 0010's.
READABLE = (
    "portfolio_mrr_monthly",
    "portfolio_customers_monthly",
    "portfolio_at_risk",
    *VIEWS,
)


def upgrade() -> None:
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
                CREATE ROLE {ROLE} NOLOGIN;
            END IF;
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO {ROLE}', current_schema());
        END
        $$
        """
    )
    op.execute(f"GRANT SELECT ON {', '.join(READABLE)} TO {ROLE}")


def downgrade() -> None:
    # The role stays: it belongs to the server, and other databases may grant it.
    op.execute(f"REVOKE ALL ON {', '.join(READABLE)} FROM {ROLE}")
    op.execute(
        "DO $$ BEGIN EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM "
        f"{ROLE}', current_schema()); END $$"
    )
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
