"""The Grafana dashboards (deploy/grafana/dashboards, made by devstack.dashboards): the
committed JSON is what the module makes, the thresholds they draw are the alert rules',
and the overview shows what the issue asks of it. That every expression parses and that
those that should have data do is checked against the real Prometheus of a test stack
(tests/e2e/test_dashboards.py); metric and label names in tests/unit/test_deploy.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import dashboards

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
FOLDER = ROOT / "deploy" / "grafana" / "dashboards"


@pytest.mark.parametrize("dashboard", dashboards.DASHBOARDS, ids=lambda d: d.uid)
def test_the_committed_json_is_what_the_module_makes(dashboard: dashboards.Dashboard) -> None:
    committed = (FOLDER / dashboard.filename).read_text()
    assert committed == dashboards.as_text(dashboard), "run `make dashboards` and commit"


def rule_thresholds() -> dict[str, set[float]]:
    """Per alert of alerts.yml, the numbers its expression compares against (0, "any" or
    "rising", is not a line); a burn-rate alert's is the objective's bound in seconds, the
    ``le`` of the recording rule it reads."""
    rules = {
        r.get("alert") or r["record"]: r["expr"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for r in group["rules"]
    }
    found: dict[str, set[float]] = {}
    for name, expr in rules.items():
        if not name.startswith("Tenure"):
            continue  # a recording rule
        if ratio := re.search(r"tenure:notification_latency_slow:\w+", expr):
            (bound,) = re.findall(r'le=~"(\d+)', rules[ratio.group()])
            found[name] = {float(bound)}
        else:
            compared = re.findall(r">\s*(\d+(?:\.\d+)?)(?!\s*\*)", expr)
            found[name] = {float(v) for v in compared} - {0.0}
    return found


def drawn(panel: dict[str, Any]) -> set[float]:
    """The threshold lines a panel draws."""
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    if defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode") not in ("line", "dashed"):
        return set()
    return {s["value"] for s in defaults["thresholds"]["steps"] if s["value"] is not None}


def panels() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}: {panel['title']}", panel)
        for path in sorted(FOLDER.glob("*.json"))
        for panel in json.loads(path.read_text())["panels"]
        if panel["type"] != "row"
    ]


def test_every_line_drawn_is_the_threshold_of_an_alert_the_panel_names() -> None:
    thresholds = rule_thresholds()
    assert thresholds["TenureConsumerLagGrowing"] == {100}  # the parse above works
    checked = 0
    for title, panel in panels():
        named = set(re.findall(r"\bTenure[A-Z]\w+", panel.get("description", "")))
        assert named <= set(thresholds), f"{title}: no such alert {named - set(thresholds)}"
        expected = set().union(*(thresholds[name] for name in named))
        assert drawn(panel) == expected, f"{title}: draws {drawn(panel)}, rules say {expected}"
        checked += bool(expected)
    assert checked >= 10


def test_the_overview_draws_the_latency_lag_and_timer_thresholds() -> None:
    overview = {
        title.removeprefix("tenure.json: "): panel
        for title, panel in panels()
        if title.startswith("tenure.json: ")
    }
    thresholds = rule_thresholds()
    latency = overview["Event to notification latency"]
    assert "tenure_notifier_event_to_send_seconds_bucket" in latency["targets"][0]["expr"]
    assert [t["legendFormat"] for t in latency["targets"]] == [
        "event to send p50",
        "event to send p99",
    ]
    assert drawn(latency) == thresholds["TenureLatencyBudgetFastBurn"] == {60}
    assert drawn(overview["Consumer lag by group"]) == thresholds["TenureConsumerLagGrowing"]
    assert drawn(overview["Timers behind, outbox waiting"]) == (
        thresholds["TenureTimersBehind"] | thresholds["TenureOutboxStuck"]
    )
    for flow in (
        "Events in",
        "Scores",
        "Journeys started and ended",
        "Messages sent",
        "Conversions",
    ):
        assert overview[flow]["targets"], flow


def test_grafana_variables_are_replaced_for_prometheus() -> None:
    expr = "rate(x[$__rate_interval]) + rate(y[$__interval])"
    assert dashboards.as_promql(expr) == "rate(x[1m]) + rate(y[15s])"
    for path in FOLDER.glob("*.json"):
        for title, _, expr in dashboards.prometheus_targets(path):
            assert "$" not in dashboards.as_promql(expr), f"{path.name}: {title}"


def test_the_charts_copies_are_the_deployed_dashboards() -> None:
    for dashboard in dashboards.DASHBOARDS:
        copy = dashboards.CHART_FOLDER / dashboard.filename
        assert copy.read_bytes() == (FOLDER / dashboard.filename).read_bytes(), "make dashboards"
    for copy in dashboards.CHART_FOLDER.glob("*.json"):
        assert copy.read_bytes() == (FOLDER / copy.name).read_bytes(), f"{copy.name} is stale"


def test_the_chart_renders_each_dashboard_for_grafanas_sidecar_in_production_only() -> None:
    from tests.unit.helm_chart import PRODUCTION, of_kind, render

    labelled = {
        name: cm
        for name, cm in of_kind(render((PRODUCTION,)), "ConfigMap").items()
        if cm["metadata"]["labels"].get("grafana_dashboard") == "1"
    }
    # The business dashboard (PostgreSQL) comes with its datasource (templates/grafana.yaml,
    # tests/unit/test_deploy_analytics.py); these are the Prometheus ones.
    business = {n for n, cm in labelled.items() if "tenure-business.json" in cm["data"]}
    assert len(business) == 1
    maps = {n: cm for n, cm in labelled.items() if n not in business}
    shipped = {file: text for cm in maps.values() for file, text in cm["data"].items()}
    assert set(shipped) == {d.filename for d in dashboards.DASHBOARDS}
    for file, text in shipped.items():
        assert json.loads(text) == json.loads((FOLDER / file).read_text()), file
    assert {cm["metadata"]["annotations"]["grafana_folder"] for cm in maps.values()} == {"Tenure"}
    default = of_kind(render(), "ConfigMap").values()
    assert not [cm for cm in default if "grafana_dashboard" in cm["metadata"]["labels"]]
