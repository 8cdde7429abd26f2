"""`make run`'s Prometheus scrapes the deploy config's jobs on the stack's own ports."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from devstack import dashboards, prometheus
from devstack.__main__ import banner
from devstack.stack import Ports, Stack


def test_every_job_points_at_the_stack_port_of_its_service(tmp_path: Path) -> None:
    stack = Stack(root=tmp_path, ports=Ports(ingest=18080, scoring_metrics=19102))
    config = prometheus.local_config(stack.service_ports())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {
        "ingest": ["127.0.0.1:18080"],
        "scoring": ["127.0.0.1:19102"],
        "orchestrator": [f"127.0.0.1:{stack.ports.orchestrator}"],
        "notifier": [f"127.0.0.1:{stack.ports.notifier}"],
    }


def test_promtool_accepts_the_local_config(tmp_path: Path) -> None:
    promtool = prometheus.BINARY.with_name("promtool")
    if not promtool.exists():
        pytest.skip("`make prometheus` could not fetch Debian's package")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(prometheus.local_config(Stack(root=tmp_path).service_ports())))
    result = subprocess.run(
        [str(promtool), "check", "config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_run_prometheus_loads_the_alert_rules_and_the_banner_shows_their_page(
    tmp_path: Path,
) -> None:
    if not prometheus.BINARY.exists():
        pytest.skip("`make prometheus` could not fetch Debian's package")
    stack = Stack(root=tmp_path, ports=Ports.free(), database_url="postgresql://x@/t")
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    assert stack.start_prometheus()
    try:
        url = f"http://127.0.0.1:{stack.ports.prometheus}"
        deadline = time.monotonic() + 30
        while True:
            groups = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
            if groups or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        alerts = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
        deployed = yaml.safe_load(prometheus.DEPLOY_CONFIG.with_name("alerts.yml").read_text())
        assert alerts == {
            r["alert"] for g in deployed["groups"] for r in g["rules"] if "alert" in r
        }
        assert {g["interval"] for g in groups} == {5}  # the local stack evaluates every 5 s
        # Every panel of the Grafana dashboards is a query this Prometheus accepts.
        for path in sorted(dashboards.FOLDER.glob("*.json")):
            for title, _, expr in dashboards.prometheus_targets(path):
                query = {"query": dashboards.as_promql(expr)}
                answer = httpx.get(f"{url}/api/v1/query", params=query, timeout=5)
                assert answer.json()["status"] == "success", (path.name, title, answer.text)
        shown = f"{url}{prometheus.ALERTS_PAGE}"
        assert shown in banner(stack, with_prometheus=True)
        page = httpx.get(shown, timeout=5)
        assert page.status_code == 200 and "TenureServiceDown" in page.text
    finally:
        stack.stop()
