"""A scripted month (November 2026) of payment events, profiles and scores, with the
figures docs/domain.md section 6 gives for it, worked out by hand.

October: c1 (basic 100 EUR), c2 (pro 200), c3 (basic 100), c4 (team 300) and c5 (basic
50 USD) start; c6 (started in September at 100) cancels. November: c1 upgrades to 150
(+50), c2 downgrades to 150 (-50), c3 cancels (-100), c4 cancels (-300) and comes back
(+300), c6 comes back at 120, c7 starts at 80 and upgrades to 100 (+20), c5 upgrades to
70 USD (+20). December: c2 cancels (outside the month).

EUR: start 700 (c1-c4); new 80; reactivation 420; expansion 70; contraction 50; churned
400; end 820 (= 700 + 80 + 420 + 70 - 50 - 400). NRR 320 / 700, GRR 250 / 700,
expansion rate 0.1, average upgrade 35.00. USD: start 50, expansion 20, end 70, NRR
1.4, GRR 1.0, expansion rate 0.4, average upgrade 20.00.

Customers live at the start: c1-c5 (5); lost (live at the start, cancelled at the end):
c3 (1), so churn 0.2 a month, 1 - 0.8^12 a year; upgraded among them: c1, c5 (upsell
conversion 0.4); first upgrades in November: c1 36 days after its start, c5 29, c7 22
(median 29).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

PREFIX = "pm-"


def at(month: int, day: int) -> datetime:
    return datetime(2026, month, day, 9, 0, tzinfo=UTC)


def pay(n: int, customer: str, type_: str, when: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{PREFIX}pay-{n:02d}",
        "customer_id": f"{PREFIX}{customer}",
        "occurred_at": when.isoformat(),
        "kind": "payment",
        "type": type_,
        **fields,
    }


EUR = {"currency": "EUR"}
PAYMENTS = [
    pay(1, "c6", "subscription_started", at(9, 1), plan="basic", mrr_after=100, **EUR),
    pay(2, "c1", "subscription_started", at(10, 5), plan="basic", mrr_after=100, **EUR),
    pay(3, "c2", "subscription_started", at(10, 10), plan="pro", mrr_after=200, **EUR),
    pay(4, "c3", "subscription_started", at(10, 12), plan="basic", mrr_after=100, **EUR),
    pay(5, "c4", "subscription_started", at(10, 15), plan="team", mrr_after=300, **EUR),
    pay(6, "c5", "subscription_started", at(10, 20), plan="basic", mrr_after=50, currency="USD"),
    pay(7, "c6", "subscription_cancelled", at(10, 25), **EUR),
    pay(8, "c1", "invoice_paid", at(11, 1), invoice_id="i-1", amount=100, **EUR),
    pay(9, "c7", "subscription_started", at(11, 3), plan="basic", mrr_after=80, **EUR),
    pay(10, "c4", "subscription_cancelled", at(11, 5), **EUR),
    pay(11, "c6", "subscription_reactivated", at(11, 8), plan="basic", mrr_after=120, **EUR),
    pay(12, "c1", "subscription_upgraded", at(11, 10), plan="pro", mrr_before=100, mrr_after=150),
    pay(13, "c2", "subscription_downgraded", at(11, 12), plan="team", mrr_after=150, **EUR),
    pay(14, "c3", "subscription_cancelled", at(11, 15), **EUR),
    pay(15, "c5", "subscription_upgraded", at(11, 18), plan="pro", mrr_after=70, currency="USD"),
    pay(16, "c4", "subscription_reactivated", at(11, 20), **EUR),  # restores its 300
    pay(17, "c7", "subscription_upgraded", at(11, 25), plan="pro", amount=20, **EUR),
    pay(18, "c2", "subscription_cancelled", at(12, 2), **EUR),
]

# (event, kind, amount, currency, plan before, plan after)
D = Decimal
MOVEMENTS = {
    ("pay-01", "new", D(100), "EUR", None, "basic"),
    ("pay-02", "new", D(100), "EUR", None, "basic"),
    ("pay-03", "new", D(200), "EUR", None, "pro"),
    ("pay-04", "new", D(100), "EUR", None, "basic"),
    ("pay-05", "new", D(300), "EUR", None, "team"),
    ("pay-06", "new", D(50), "USD", None, "basic"),
    ("pay-07", "churn", D(100), "EUR", "basic", "basic"),
    ("pay-09", "new", D(80), "EUR", None, "basic"),
    ("pay-10", "churn", D(300), "EUR", "team", "team"),
    ("pay-11", "reactivation", D(120), "EUR", "basic", "basic"),
    ("pay-12", "expansion", D(50), "EUR", "basic", "pro"),
    ("pay-13", "contraction", D(50), "EUR", "pro", "team"),
    ("pay-14", "churn", D(100), "EUR", "basic", "basic"),
    ("pay-15", "expansion", D(20), "USD", "basic", "pro"),
    ("pay-16", "reactivation", D(300), "EUR", "team", "team"),
    ("pay-17", "expansion", D(20), "EUR", "basic", "pro"),
    ("pay-18", "churn", D(150), "EUR", "team", "team"),
}

NOVEMBER = {
    "EUR": {
        "mrr_start": "700.00",
        "mrr_end": "820.00",
        "new": "80.00",
        "expansion": "70.00",
        "contraction": "50.00",
        "churned": "400.00",
        "reactivation": "420.00",
        "upgrades": 2,
        "nrr": 320 / 700,
        "grr": 250 / 700,
        "expansion_rate": 0.1,
        "average_upgrade_value": "35.00",
    },
    "USD": {
        "mrr_start": "50.00",
        "mrr_end": "70.00",
        "new": "0.00",
        "expansion": "20.00",
        "contraction": "0.00",
        "churned": "0.00",
        "reactivation": "0.00",
        "upgrades": 1,
        "nrr": 1.4,
        "grr": 1.0,
        "expansion_rate": 0.4,
        "average_upgrade_value": "20.00",
    },
}
NOVEMBER_CUSTOMERS = {
    "at_start": 5,
    "lost": 1,
    "upgraded": 2,
    "churn_rate": 0.2,
    "annual_churn": 1 - 0.8**12,
    "upsell_conversion": 0.4,
    "median_days_to_upsell": 29.0,
}

# plan at the start of November -> (customers live then, of those cancelled at its end)
NOVEMBER_BY_PLAN = {"basic": (3, 1), "pro": (1, 0), "team": (1, 0)}
