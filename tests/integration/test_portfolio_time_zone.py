"""The portfolio views count calendar months in UTC whatever the session's time zone
(Grafana's, or the server's default, may be any): a cancellation on the last day of a
31-day month that follows a 30-day month is lost in that month, in every zone."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from common.db import create_engine
from common.db.tables import subscription_states
from devstack.stack import Stack

ZONES = ("UTC", "America/New_York", "Asia/Tokyo", "Pacific/Honolulu")


def state(event_id: str, customer: str, value: str, at: datetime) -> dict[str, object]:
    return {
        "event_id": event_id,
        "customer_id": customer,
        "state": value,
        "plan": "pro",
        "mrr": Decimal("100"),
        "currency": "EUR",
        "occurred_at": at,
    }


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_portfolio_time_zone")


async def test_a_month_end_cancellation_is_lost_in_its_month_in_every_time_zone(
    database_url: str,
) -> None:
    engine = create_engine(database_url, pool_size=1)
    april = datetime(2026, 4, 10, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(subscription_states),
            [
                state("a1", "a", "active", april),
                state("a2", "a", "cancelled", datetime(2026, 5, 31, 12, tzinfo=UTC)),
                state("b1", "b", "active", april),
            ],
        )
    try:
        for zone in ZONES:
            async with engine.connect() as conn:
                await conn.execute(sa.text(f"SET TIME ZONE '{zone}'"))
                rows = await conn.execute(
                    sa.text(
                        "SELECT to_char(month_start AT TIME ZONE 'UTC', 'YYYY-MM'), at_start, lost"
                        " FROM portfolio_customers_monthly ORDER BY month_start"
                    )
                )
                months = {m: (at_start, lost) for m, at_start, lost in rows}
                churn = await conn.execute(
                    sa.text("SELECT month, lost FROM portfolio_churn_monthly ORDER BY month")
                )
                churn_lost = dict(churn.all())
            assert months["2026-05"] == (2, 1), (zone, months)
            assert months["2026-06"] == (1, 0), (zone, months)
            assert churn_lost["2026-05"] == 1, (zone, churn_lost)
    finally:
        await engine.dispose()
