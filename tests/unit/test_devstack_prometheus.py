"""`make run`'s Prometheus scrapes the deploy config's jobs on the stack's own ports."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from devstack import prometheus
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
