"""``tenure report`` on the real broker and PostgreSQL, its page rendered in a real browser.

The scripted month is loaded as the portfolio API's test loads it
(``tests/integration/portfolio_month.scripted_month``: published, consumed by the
orchestrator's consumers, a playbook's November journeys written as rows).
``tenure report --month 2026-11`` runs through its console script, as a user runs it;
Debian's headless Chromium (``make chromium``) renders the page: its DOM shows the
figures ``GET /v1/metrics/portfolio`` answers for November, formatted as the page
formats them, and a screenshot is kept in ``.stack/test-artifacts/`` (path printed).
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from common.settings import CommonSettings
from devstack.stack import Stack
from orchestrator.entrypoints.report import shaping as S
from tests.integration import portfolio_month as M

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".stack" / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
TENURE = Path(sys.executable).parent / "tenure"
WIDTH, HEIGHT = 1280, 2000
# Anything a page could fetch: a URL with a scheme or protocol-relative, CSS url(), @import.
EXTERNAL = re.compile(r"(?i)\b(?:https?|ftp|wss?):|=\s*[\"']?//|url\(|@import")


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_report")


@pytest.fixture(scope="module")
async def november(database_url: str, common_settings: CommonSettings) -> dict[str, Any]:
    """The scripted month loaded; the API's answer for November."""
    async with M.scripted_month(database_url, common_settings, name="rep") as loaded:
        response = await loaded.api.get("/v1/metrics/portfolio", params={"period": "2026-11"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def tenure(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TENURE), *args], capture_output=True, text=True, timeout=120, check=False
    )


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with a profile of its own, nothing fetched in the background."""
    assert CHROMIUM.exists(), "Debian's chromium is missing: make chromium"
    profile = tempfile.mkdtemp(prefix="tenure-chromium-")
    try:
        return subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def shown(dom: str, figure: str) -> str:
    found = re.search(rf'data-figure="{re.escape(figure)}"[^>]*>([^<]*)<', dom)
    assert found is not None, f"{figure} is not on the page"
    return html.unescape(found[1]).strip()  # the DOM is serialised with &nbsp;


@pytest.fixture(scope="module")
def page(november: dict[str, Any], database_url: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = ARTIFACTS / "report-2026-11.html"
    out.unlink(missing_ok=True)
    done = tenure("report", "--month", "2026-11", "--out", str(out), "--database-url", database_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out} (2026-11, ")
    print(f"\nreport page: {out}")
    return out


def test_the_page_is_one_file_that_fetches_nothing(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert EXTERNAL.search(text) is None, EXTERNAL.search(text)
    assert "<link" not in text and "<script" not in text
    images = re.findall(r'<img src="([^"]*)"', text)
    # waterfall x2 (EUR, USD), NRR/GRR x2, churn by plan, at-risk MRR, uplift
    assert len(images) == 7
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "@media print" in text


def test_a_browser_shows_the_month_s_figures(page: Path, november: dict[str, Any]) -> None:
    done = chromium("--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    [month] = november["months"]
    eur, usd = month["currencies"]["EUR"], month["currencies"]["USD"]
    assert shown(dom, "nrr-EUR") == S.percent(eur["nrr"]) == "45.7\u00a0%"
    assert shown(dom, "grr-EUR") == S.percent(eur["grr"]) == "35.7\u00a0%"
    assert shown(dom, "nrr-USD") == S.percent(usd["nrr"]) == "140.0\u00a0%"
    assert shown(dom, "mrr_end-EUR") == S.money(eur["mrr_end"], "EUR") == "820.00\u00a0EUR"
    assert shown(dom, "churned-EUR") == "400.00\u00a0EUR"
    assert shown(dom, "average_upgrade_value-USD") == "20.00\u00a0USD"
    customers = month["customers"]
    assert shown(dom, "churn_rate") == S.percent(customers["churn_rate"]) == "20.0\u00a0%"
    assert shown(dom, "annual_churn") == S.percent(customers["annual_churn"]) == "93.1\u00a0%"
    assert shown(dom, "median_days_to_upsell") == "29.0\u00a0days"
    # churn by plan at the start of November: c1, c3 and c5 on basic (c3 lost), c2 pro, c4 team
    assert shown(dom, "churn-basic") == "33.3\u00a0%"
    assert shown(dom, "churn-team") == "0.0\u00a0%"
    uplift = month["playbooks"]["upsell_results"]["uplift"]
    assert shown(dom, "uplift-upsell_results") == (
        "+20.0\u00a0% (95\u00a0% CI -13.9\u00a0% to +53.9\u00a0%)"
    )
    assert uplift["estimate"] == pytest.approx(0.2)
    # MRR at risk now: c4 240 (high), c7 60 (high), c8 36 (high); c1 45 + c5 35 USD ...
    assert shown(dom, "at_risk-high-EUR") == "336.00\u00a0EUR"
    assert "Portfolio report: November 2026" in dom


def test_a_screenshot_of_the_page_is_kept(page: Path) -> None:
    shot = ARTIFACTS / "report-2026-11.png"
    shot.unlink(missing_ok=True)
    done = chromium(
        f"--screenshot={shot}",
        f"--window-size={WIDTH},{HEIGHT}",
        "--hide-scrollbars",
        page.as_uri(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    print(f"\nreport screenshot: {shot}")
    with Image.open(shot) as image:
        assert image.format == "PNG"
        assert image.size == (WIDTH, HEIGHT)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    # Not blank: text, tables and charts make thousands of colours, a blank page one.
    assert colours is not None and len(colours) > 500


def test_the_page_prints(page: Path) -> None:
    """Printed (the print style sheet, A4) to a PDF of a few pages, kept beside the page."""
    pdf = ARTIFACTS / "report-2026-11.pdf"
    pdf.unlink(missing_ok=True)
    done = chromium(f"--print-to-pdf={pdf}", "--no-pdf-header-footer", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page\b", data))
    assert 2 <= pages <= 12, pages
    print(f"\nreport printed: {pdf} ({pages} pages)")


def test_a_bad_month_is_one_line_naming_the_option(tmp_path: Path) -> None:
    for bad in ("2026-13",):  # more cases through main() in tests/unit/orchestrator
        done = tenure("report", "--month", bad, "--out", str(tmp_path / "r.html"))
        assert done.returncode == 2, (bad, done.stderr)
        assert done.stderr == (
            f"tenure: error: --month: {bad!r} is not a month: expected YYYY-MM, e.g. 2026-11\n"
        )
        assert not (tmp_path / "r.html").exists()
