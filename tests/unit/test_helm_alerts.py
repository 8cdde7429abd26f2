"""The alert rules reach every deployment: docker-compose mounts deploy/prometheus/alerts.yml
beside prometheus.yml, the Helm chart renders it as a PrometheusRule (its copy kept
identical)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.unit.helm_chart import PRODUCTION, of_kind, render

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
CHART_RULES = ROOT / "deploy" / "helm" / "tenure" / "files" / "alerts.yml"


def test_the_charts_copy_of_the_rules_is_the_deployed_file() -> None:
    assert CHART_RULES.read_bytes() == RULES.read_bytes(), (
        "cp deploy/prometheus/alerts.yml deploy/helm/tenure/files/alerts.yml"
    )


def test_compose_mounts_the_rules_where_prometheus_yml_loads_them() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert f"./deploy/prometheus/{rule_file}:/etc/prometheus/{rule_file}:ro" in volumes


def test_the_chart_renders_the_rules_as_a_prometheus_rule_in_production_only() -> None:
    (rule,) = of_kind(render((PRODUCTION,)), "PrometheusRule").values()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    assert not of_kind(render(), "PrometheusRule"), "off by default (needs the operator's CRDs)"
