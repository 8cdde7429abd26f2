"""``tenure report``'s pure parts: how figures are written, the charts' series, the page
rendered from figures in memory, and a bad ``--month``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from orchestrator.adapters.portfolio import ClvGroup, TierAtRisk
from orchestrator.domain import attribution as A
from orchestrator.domain import portfolio as P
from orchestrator.domain.movements import Kind
from orchestrator.entrypoints.report import shaping as S
from orchestrator.entrypoints.report.page import Report, render
from orchestrator.service_layer.portfolio import MonthFigures, PlaybookFigures, PortfolioFigures
from tenure_cli.command import main

NB = "\u00a0"
D = Decimal


def test_money_has_two_decimals_thousands_and_the_currency() -> None:
    assert S.money(D("1234.5"), "EUR") == f"1,234.50{NB}EUR"
    assert S.money(820.0, "USD") == f"820.00{NB}USD"
    assert S.money(D("-50"), "EUR") == f"-50.00{NB}EUR"
    assert S.money(None, "EUR") == S.MISSING
    assert S.money(D("49.505"), "EUR") == f"49.51{NB}EUR"  # halves away from zero
    assert S.money(D("-0.125"), "EUR") == f"-0.13{NB}EUR"
    assert S.moneys({"USD": D(2), "EUR": D("1.5")}) == f"1.50{NB}EUR, 2.00{NB}USD"
    assert S.moneys(None) == S.moneys({}) == S.MISSING


def test_rates_are_percentages_with_one_decimal() -> None:
    assert S.percent(320 / 700) == f"45.7{NB}%"
    assert S.percent(1.4) == f"140.0{NB}%"
    assert S.percent(1 - 0.8**12) == f"93.1{NB}%"
    assert S.percent(0.2, signed=True) == f"+20.0{NB}%"
    assert S.percent(-0.139476, signed=True) == f"-13.9{NB}%"
    assert S.percent(-0.0001, signed=True) == f"0.0{NB}%"
    assert S.percent(None) == S.MISSING
    assert S.days(29.0) == f"29.0{NB}days" and S.days(None) == S.MISSING
    assert S.count(12345) == "12,345"


def test_an_uplift_is_written_with_its_interval() -> None:
    found = P.uplift_interval(3, 10, 1, 10, confidence=0.95)
    assert S.interval(found) == f"+20.0{NB}% (95{NB}% CI -13.9{NB}% to +53.9{NB}%)"
    assert S.interval(None) == S.MISSING


def test_month_back_and_title() -> None:
    assert P.Month(2026, 11).back(11) == P.Month(2025, 12)
    assert P.Month(2026, 1).back(1) == P.Month(2025, 12)
    assert P.Month(2026, 11).back(0) == P.Month(2026, 11)
    assert S.month_title(P.Month(2026, 11)) == "November 2026"


def eur_november() -> P.MrrFigures:
    sums = {
        Kind.NEW: D(80),
        Kind.REACTIVATION: D(420),
        Kind.EXPANSION: D(70),
        Kind.CONTRACTION: D(50),
        Kind.CHURN: D(400),
    }
    return P.mrr_figures(D(700), D(820), sums, upgrades=2)


def test_the_waterfall_stacks_each_movement_on_the_running_total() -> None:
    bars = S.waterfall_bars(eur_november())
    assert [(b.label, b.bottom, b.height, b.kind) for b in bars] == [
        ("Start", 0.0, 700.0, "total"),
        ("New", 700.0, 80.0, "up"),
        ("Reactivation", 780.0, 420.0, "up"),
        ("Expansion", 1200.0, 70.0, "up"),
        ("Contraction", 1270.0, -50.0, "down"),
        ("Churned", 1220.0, -400.0, "down"),
        ("End", 0.0, 820.0, "total"),
    ]
    assert bars[-2].bottom + bars[-2].height == bars[-1].height  # the steps reach the end


def month(m: P.Month, currencies: dict[str, P.MrrFigures], **more: object) -> MonthFigures:
    return MonthFigures(
        month=m,
        currencies=currencies,
        customers=P.customer_figures(5, 1, 2, [36, 29, 22]),
        churn_by_plan=more.get("by_plan", {}),  # type: ignore[arg-type]
        playbooks=more.get("playbooks", {}),  # type: ignore[arg-type]
    )


EMPTY = P.mrr_figures(D(0), D(0), {}, upgrades=0)


def test_nrr_and_grr_by_month_leave_out_months_without_mrr_at_start() -> None:
    months = [
        month(P.Month(2026, 9), {}),
        month(P.Month(2026, 10), {"EUR": EMPTY}),
        month(P.Month(2026, 11), {"EUR": eur_november(), "USD": EMPTY}),
    ]
    series = S.retention_series(months)
    assert list(series) == ["EUR"]  # USD had no MRR at the start of any month
    nrr, grr = series["EUR"]
    assert (nrr.name, nrr.points) == ("NRR", [("2026-11", pytest.approx(320 / 700))])
    assert (grr.name, grr.points) == ("GRR", [("2026-11", pytest.approx(250 / 700))])
    assert [str(m.month) for m in S.since_first_figures(months)] == ["2026-11"]
    assert S.since_first_figures(months[:2]) == []


def test_churn_by_plan_and_uplift_points_and_tiers() -> None:
    by_plan = {"team": P.plan_churn(1, 0), "basic": P.plan_churn(3, 1), "none": P.plan_churn(0, 0)}
    assert S.plan_churn_bars(by_plan) == [
        ("basic", pytest.approx(1 / 3), "1/3"),
        ("team", 0.0, "0/1"),
    ]
    assert by_plan["basic"].annual_churn == pytest.approx(1 - (2 / 3) ** 12)
    treated, control = A.Tally(10, 3, {"EUR": D(150)}, 10), A.Tally(10, 1, {"EUR": D(20)}, 0)
    playbooks = {
        "b": PlaybookFigures(
            treated, control, P.uplift_interval(3, 10, 1, 10, confidence=0.95), None, None
        ),
        "a": PlaybookFigures(treated, A.Tally(), None, None, None),
    }
    [point] = S.uplift_points(playbooks)
    assert (point.playbook, point.estimate) == ("b", pytest.approx(0.2))
    assert point.low == pytest.approx(0.2 - 0.339476, abs=1e-6)
    assert S.tier_order(["low", "critical", "high"]) == ["high", "low", "critical"]


def test_the_page_is_self_contained_and_shows_the_figures() -> None:
    treated, control = A.Tally(10, 3, {"EUR": D(150)}, 10), A.Tally(10, 1, {"EUR": D(20)}, 0)
    november = month(
        P.Month(2026, 11),
        {"EUR": eur_november()},
        by_plan={"basic": P.plan_churn(3, 1)},
        playbooks={
            "upsell_results": PlaybookFigures(
                treated,
                control,
                P.uplift_interval(3, 10, 1, 10, confidence=0.95),
                {"EUR": D(130)},
                {"EUR": D(15)},
            )
        },
    )
    figures = PortfolioFigures(
        [month(P.Month(2026, 10), {"EUR": EMPTY}), november],
        clv_by_segment={"EUR": {"low": ClvGroup(2, D(700))}},
        clv_by_plan={"EUR": {"basic": ClvGroup(2, D(1750))}},
    )
    html = render(
        Report(
            figures,
            at_risk={"EUR": {"high": TierAtRisk(3, D(440), D(336))}},
            confidence=0.95,
            generated_at=datetime(2026, 12, 7, 9, 0, tzinfo=UTC),
        )
    )
    assert re.search(r"(?i)https?:|url\(|<script|<link", html) is None
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == 5
    assert f'data-figure="nrr-EUR">45.7{NB}%<' in html
    assert f'data-figure="at_risk-high-EUR">336.00{NB}EUR<' in html
    assert "130.00" in html and "1,750.00" in html
    assert "Generated 2026-12-07 09:00 UTC" in html


@pytest.mark.parametrize("bad", ["2026-13", "2026-1", "11-2026", "2026-00", "next"])
def test_a_bad_month_exits_2_with_one_line_naming_the_option(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    assert main(["report", "--month", bad, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"tenure: error: --month: {bad!r} is not a month: expected YYYY-MM, e.g. 2026-11\n"
    )
    assert not out.exists()


def test_a_missing_folder_for_out_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nowhere" / "report.html"
    assert main(["report", "--month", "2026-11", "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"tenure: error: --out: no such folder {str(out.parent)!r}\n"
