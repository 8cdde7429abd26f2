"""Attribution of conversions and revenue to journeys: the pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from orchestrator.domain import attribution as A
from orchestrator.domain.playbook import SHIPPED, Conversion, PlaybookError, load_playbook
from orchestrator.domain.playbook import load_playbooks as load

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
BOOKS = load(SHIPPED)
DAY = timedelta(days=1)


def upgrade(at: datetime, **kw: object) -> A.Payment:
    args: dict[str, object] = dict(
        event_id="evt-1",
        type="subscription_upgraded",
        at=at,
        plan="pro",
        mrr_before=29.0,
        mrr_after=99.0,
        currency="EUR",
    )
    args.update(kw)
    return A.Payment(**args)  # type: ignore[arg-type]


def span(playbook: str = "upsell_results", **kw: object) -> A.JourneySpan:
    args: dict[str, object] = dict(
        journey_id="j1", playbook=playbook, started_at=T0, ended_at=T0, last_step_at=T0
    )
    args.update(kw)
    return A.JourneySpan(**args)  # type: ignore[arg-type]


def attribute(payment: A.Payment, *journeys: A.JourneySpan) -> list[A.Attribution]:
    return A.attribute(payment, journeys, BOOKS, default_currency="EUR")


def test_every_revenue_goal_of_the_shipped_playbooks_is_declared() -> None:
    with_revenue = {name for name, book in BOOKS.items() if book.conversion is not None}
    assert with_revenue == {
        "upsell_usage",
        "upsell_need",
        "upsell_results",
        "saas_upsell",
        "cross_sell",
        "course_upsell",
        "win_back",
        "downgrade_save",
    }
    assert BOOKS["upsell_usage"].conversion == Conversion(
        types=("subscription_upgraded",), revenue="mrr_delta"
    )


def test_an_upgrade_after_the_last_step_inside_the_window_is_attributed_with_its_mrr_delta() -> (
    None
):
    # upsell_results: one step at +0 d, completed at once; window 14 days after it.
    [found] = attribute(upgrade(T0 + 14 * DAY), span())
    assert (found.journey_id, found.playbook, found.revenue, found.currency) == (
        "j1",
        "upsell_results",
        Decimal("70.00"),
        "EUR",
    )
    assert found.converted_at == T0 + 14 * DAY and found.event_id == "evt-1"
    assert attribute(upgrade(T0 + 14 * DAY + timedelta(seconds=1)), span()) == []
    assert attribute(upgrade(T0 - timedelta(seconds=1)), span()) == []  # before it started


def test_a_live_journey_takes_any_conversion_after_its_start() -> None:
    live = span("win_back", ended_at=None, last_step_at=None)
    reactivated = upgrade(T0 + 40 * DAY, type="subscription_reactivated", mrr_after=49.0)
    [found] = attribute(reactivated, live)
    assert (found.playbook, found.revenue) == ("win_back", Decimal("49.00"))


def test_the_window_runs_from_the_last_step_or_the_end_whichever_is_later() -> None:
    window = timedelta(days=14)
    ended_late = span(ended_at=T0 + 20 * DAY, last_step_at=T0)
    assert A.window_end(ended_late, window) == T0 + 20 * DAY
    no_step = span(ended_at=T0 + DAY, last_step_at=None)
    assert A.window_end(no_step, window) == T0 + 14 * DAY
    assert A.window_end(span(ended_at=None), window) is None
    assert A.in_window(T0 + 19 * DAY, ended_late, window)


def test_goal_must_match_type_plan_and_product() -> None:
    saas = span("saas_upsell")
    assert attribute(upgrade(T0 + DAY, plan="basic"), saas) == []
    assert [a.playbook for a in attribute(upgrade(T0 + DAY, plan="enterprise"), saas)] == [
        "saas_upsell"
    ]
    course = span("course_upsell")
    purchase = upgrade(T0 + DAY, type="purchase", product="webinar", amount=199.0)
    assert attribute(purchase, course) == []
    bought = attribute(
        upgrade(T0 + DAY, type="purchase", product="course", amount=199.0, currency=None), course
    )
    assert [(a.playbook, a.revenue, a.currency) for a in bought] == [
        ("course_upsell", Decimal("199.00"), "EUR")  # the default currency
    ]
    # A playbook without a conversion block (retention_offer) never takes revenue.
    assert attribute(upgrade(T0 + DAY), span("retention_offer", ended_at=None)) == []


def test_one_journey_per_playbook_the_latest_started_and_each_playbook_on_its_own() -> None:
    older = span(journey_id="old", started_at=T0 - 40 * DAY, ended_at=None, last_step_at=None)
    newer = span(journey_id="new", started_at=T0, ended_at=None, last_step_at=None)
    usage = span("upsell_usage", journey_id="u", arm="control", variant=None)
    found = attribute(upgrade(T0 + DAY), older, usage, newer)
    assert [(a.playbook, a.journey_id, a.arm) for a in found] == [
        ("upsell_results", "new", "treatment"),
        ("upsell_usage", "u", "control"),
    ]


@pytest.mark.parametrize(
    ("rule", "payment", "expected"),
    [
        ("mrr_delta", dict(mrr_before=29.0, mrr_after=99.0, amount=5.0), "70.00"),
        ("mrr_delta", dict(mrr_before=None, mrr_after=99.0, amount=12.5), "12.50"),
        ("mrr_delta", dict(mrr_before=99.0, mrr_after=29.0), "0.00"),  # never negative
        ("mrr_after", dict(mrr_after=None, amount=49.99), "49.99"),
        ("amount", dict(amount=0.1 + 0.2), "0.30"),
        ("amount", dict(amount=None), "0.00"),
        ("none", dict(amount=500.0), "0.00"),
    ],
)
def test_revenue_rules(rule: str, payment: dict[str, object], expected: str) -> None:
    base = dict(mrr_before=None, mrr_after=None, amount=None)
    base.update(payment)
    assert A.revenue_of(rule, upgrade(T0, **base)) == Decimal(expected)  # type: ignore[arg-type]


def test_holdout_comparison_per_journey_and_per_message() -> None:
    treatment = A.Tally(journeys=10, converted=4, revenue={"EUR": Decimal("700")}, messages=20)
    control = A.Tally(journeys=5, converted=1, revenue={"EUR": Decimal("100")})
    result = A.compare(treatment, control)
    assert result.uplift == pytest.approx(0.2)
    assert result.relative_uplift == pytest.approx(1.0)
    assert result.revenue_per_journey_uplift == {"EUR": Decimal("50.00")}  # 70 - 20
    assert result.incremental_revenue == {"EUR": Decimal("500.00")}
    assert A.per(treatment.revenue, treatment.messages) == {"EUR": Decimal("35.00")}
    assert A.per(treatment.revenue, 0) is None
    assert A.compare(treatment, A.Tally()) == A.Holdout(None, None, None, None)
    # A currency only one arm has counts as 0 in the other.
    mixed = A.compare(
        A.Tally(journeys=2, revenue={"USD": Decimal("10")}),
        A.Tally(journeys=1, revenue={"EUR": Decimal("3")}),
    )
    assert mixed.revenue_per_journey_uplift == {"EUR": Decimal("-3.00"), "USD": Decimal("5.00")}


def test_revenue_halves_round_away_from_zero() -> None:
    """Revenue per journey 130.05 / 10 = 13.005 -> 13.01 (half to even gave 13.00), as
    the dashboard's round(numeric, 2) does."""
    treatment = A.Tally(journeys=10, converted=3, revenue={"EUR": Decimal("130.05")})
    control = A.Tally(journeys=10, converted=1, revenue={})
    result = A.compare(treatment, control)
    assert result.revenue_per_journey_uplift == {"EUR": Decimal("13.01")}
    assert A.per({"EUR": Decimal("0.25")}, 2) == {"EUR": Decimal("0.13")}
    assert A.per({"EUR": Decimal("-0.25")}, 2) == {"EUR": Decimal("-0.13")}
    assert A.cents(Decimal("2.675")) == Decimal("2.68")


def test_a_bad_conversion_block_names_the_field(tmp_path: Path) -> None:
    text = (SHIPPED / "upsell_usage.yaml").read_text()
    bad = tmp_path / "upsell_usage.yaml"
    bad.write_text(text.replace("revenue: mrr_delta", "revenue: profit"))
    with pytest.raises(PlaybookError, match=r"upsell_usage.yaml.*conversion\.revenue"):
        load_playbook(bad)
    bad.write_text(text.replace("attribution_window: P14D", "attribution_window: -P1D"))
    with pytest.raises(PlaybookError, match="attribution_window must not be negative"):
        load_playbook(bad)


def test_results_by_arm_and_by_variant_count_customer_messages_only() -> None:
    from orchestrator.adapters.operator import GroupCounts, Results
    from orchestrator.entrypoints.api.results import tallies

    book = BOOKS["retention_offer"]  # variants; offer is an email, the rest CSM tasks
    found = Results(
        groups=[
            GroupCounts("treatment", "discount_30_3_months", journeys=4, converted=2),
            GroupCounts("treatment", "free_upgrade_1_month", journeys=6, converted=1),
            GroupCounts("control", "discount_30_3_months", journeys=2, converted=1),
        ],
        revenue={
            ("treatment", "discount_30_3_months", "EUR"): (Decimal("80"), 2),
            ("treatment", "free_upgrade_1_month", "EUR"): (Decimal("30"), 1),
            ("control", "discount_30_3_months", "EUR"): (Decimal("10"), 1),
        },
        sent={
            ("treatment", "discount_30_3_months", "offer"): 4,
            ("treatment", "discount_30_3_months", "retention_call"): 4,
            ("treatment", "free_upgrade_1_month", "offer"): 6,
        },
    )
    by_arm, by_variant = tallies(book, found)
    assert by_arm["treatment"] == A.Tally(10, 3, {"EUR": Decimal("110")}, 10)
    assert by_arm["control"] == A.Tally(2, 1, {"EUR": Decimal("10")}, 0)
    assert by_variant == {
        "discount_30_3_months": A.Tally(4, 2, {"EUR": Decimal("80")}, 4),
        "free_upgrade_1_month": A.Tally(6, 1, {"EUR": Decimal("30")}, 6),
    }
    assert A.per(by_variant["discount_30_3_months"].revenue, 4) == {"EUR": Decimal("20.00")}
