"""The thresholds of the alert rules, read from ``deploy/prometheus/alerts.yml`` (the one
place the numbers live): a panel that shows what an alert watches draws them as lines
(tests/unit/test_dashboards.py checks the drawn values against the rules)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import yaml

ALERTS = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "alerts.yml"


@cache
def _rules() -> dict[str, str]:
    """Every rule's expression, by alert name or recording rule name."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {r.get("alert") or r["record"]: r["expr"] for g in groups for r in g["rules"]}


def alert_thresholds(alert: str) -> tuple[float, ...]:
    """The values an alert compares against (``> 100``; 0, "rising", is not drawn). For
    a burn-rate alert on the latency objective: the objective's bound in seconds (the
    ``le`` bucket of the ratio it reads), which is what a latency panel can draw."""
    expr = _rules()[alert]
    objective = re.search(r"(tenure:[\w:]+)", expr)
    if objective:
        bound = re.search(r'le=~?"([\d.]+)', _rules()[objective.group(1)])
        assert bound, f"{alert}: no le bound in {objective.group(1)}"
        return (float(bound.group(1)),)
    found = {float(v) for v in re.findall(r">\s*([\d.]+)\b(?!\s*\*)", expr)} - {0.0}
    assert found, f"{alert}: no threshold in its expression"
    return tuple(sorted(found))
