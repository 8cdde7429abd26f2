"""The business dashboard follows the orchestrator's settings (review of issue 17).

Two of the dashboard's figures depend on settings, which a view cannot read (they are
the orchestrator's environment):

- MRR at risk of a scored customer whose subscription and profile name no currency: the
  API and the report count it under ``TENURE_ORCHESTRATOR_DEFAULT_CURRENCY``; 0010's
  ``portfolio_at_risk`` left its currency NULL, so the dashboard's currency filter
  dropped it.
- The uplift interval: 0011's ``portfolio_playbook_monthly`` wrote the 95 % one; the
  API's follows ``TENURE_ORCHESTRATOR_PORTFOLIO_CONFIDENCE``.

A one-row table, ``portfolio_settings``, holds them: the default currency, the
confidence and its two-sided normal quantile ``z`` (PostgreSQL has no inverse normal),
seeded here with the settings' defaults (EUR, 0.95) and written by the orchestrator
when it starts. ``portfolio_at_risk`` falls back to its default currency
(``portfolio_at_risk_summary``, which reads it, follows); ``portfolio_playbook_monthly``
draws its interval with its ``z`` and names the ``confidence`` in a last column (so it
is dropped and created again, and granted to the role again: a view cannot lose a
column on the way down). The role ``tenure_analytics`` reads the table through the
views only.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ROLE = "tenure_analytics"
TS = sa.TIMESTAMP(timezone=True)
DEFAULT_CURRENCY = "EUR"  # OrchestratorSettings.default_currency's default
CONFIDENCE = 0.95  # OrchestratorSettings.portfolio_confidence's default
Z95 = 1.959963984540054  # its two-sided normal quantile

# The text below repeats 0010's and 0011's (a migration is a frozen snapshot): the
# views as they were, with the settings' figures in place of {currency} and {z}.
_AT_RISK = """
    CREATE OR REPLACE VIEW portfolio_at_risk AS
    SELECT s.customer_id, coalesce(sub.mrr, c.mrr, 0) AS mrr,
           coalesce(sub.currency, c.profile->>'currency'{currency}) AS currency,
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
"""
_SETTING_CURRENCY = ", (SELECT default_currency FROM portfolio_settings)"

_MONTH = "to_char(month_start AT TIME ZONE 'UTC', 'YYYY-MM')"
_PLAYBOOKS = f"""
    CREATE VIEW portfolio_playbook_monthly AS
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
    SELECT month_start, {_MONTH} AS month, playbook, journeys,
           conversions, control_journeys, control_conversions,
           p_t AS conversion_rate, p_c AS control_conversion_rate, uplift,
           uplift - {{z}} * se AS uplift_low, uplift + {{z}} * se AS uplift_high{{confidence}}
    FROM u
"""
_SETTING_Z = "(SELECT z FROM portfolio_settings)"
_SETTING_CONFIDENCE = ",\n           (SELECT confidence FROM portfolio_settings) AS confidence"


def upgrade() -> None:
    op.create_table(
        "portfolio_settings",
        sa.Column("id", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column("default_currency", sa.Text, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("z", sa.Float, nullable=False),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("id", name="portfolio_settings_one_row"),
        sa.CheckConstraint(
            "confidence > 0 AND confidence < 1 AND z > 0", name="portfolio_settings_confidence"
        ),
    )
    op.execute(
        "INSERT INTO portfolio_settings (default_currency, confidence, z) "
        f"VALUES ('{DEFAULT_CURRENCY}', {CONFIDENCE}, {Z95})"
    )
    op.execute(_AT_RISK.format(currency=_SETTING_CURRENCY))
    op.execute("DROP VIEW portfolio_playbook_monthly")
    op.execute(_PLAYBOOKS.format(z=_SETTING_Z, confidence=_SETTING_CONFIDENCE))
    op.execute(f"GRANT SELECT ON portfolio_playbook_monthly TO {ROLE}")


def downgrade() -> None:
    op.execute("DROP VIEW portfolio_playbook_monthly")
    op.execute(_PLAYBOOKS.format(z=Z95, confidence=""))
    op.execute(f"GRANT SELECT ON portfolio_playbook_monthly TO {ROLE}")
    op.execute(_AT_RISK.format(currency=""))
    op.drop_table("portfolio_settings")
