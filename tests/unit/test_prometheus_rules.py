"""The alert rules: promtool's unit tests of every rule (tests/prometheus/*.test.yml),
promtool's checks of deploy/prometheus, and what every alert must carry (a summary, a
description, a severity, a runbook section that exists)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import prometheus

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "prometheus"
TESTS = sorted((REPO / "tests" / "prometheus").glob("*.test.yml"))
RUNBOOKS = REPO / "docs" / "runbooks.md"
PROMTOOL = prometheus.BINARY.with_name("promtool")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.skip("`make prometheus` could not fetch Debian's package")
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = promtool("test", "rules", *map(str, TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_rules_and_the_config_that_loads_them() -> None:
    rules = promtool("check", "rules", str(DEPLOY / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    assert "alerts.yml" in config.stdout + config.stderr  # the rule file was loaded


def test_every_alert_fires_and_stays_quiet_in_some_promtool_test() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fired == set(), "alerts no test makes fire"
    assert names - quiet == set(), "alerts no test shows quiet"


def test_every_alert_has_a_summary_a_description_a_severity_and_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in alerts():
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        assert re.search(r"\d", notes["description"]), f"{rule['alert']}: no numbers"
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/runbooks.md" and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"docs/runbooks.md has no section for {rule['alert']}"
