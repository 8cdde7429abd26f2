"""Prometheus for the local stack: the binary of `make prometheus`, scraping the services.

The scrape jobs and alert rules are those of ``deploy/prometheus/prometheus.yml`` (one
source of truth), pointed at the stack's loopback ports instead of compose host names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BINARY = REPO / ".stack" / "prometheus" / "usr" / "bin" / "prometheus"
DEPLOY_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
# Debian's build reads its web pages from this folder of the package (the classic UI:
# /classic/graph, /classic/alerts); the default path is that of an installed package.
ASSETS = REPO / ".stack" / "prometheus" / "usr" / "share" / "prometheus" / "web"
ALERTS_PAGE = "/classic/alerts"
"""The page listing the alerts and their state, in Debian's build (the classic UI)."""


def local_config(
    service_ports: dict[str, int], scrape_interval_s: int = 5, evaluation_interval_s: int = 5
) -> dict[str, Any]:
    """The deploy config with every job's target replaced by ``127.0.0.1:<port>`` and its
    rule files (``deploy/prometheus/alerts.yml``) named by absolute path."""
    config: dict[str, Any] = yaml.safe_load(DEPLOY_CONFIG.read_text())
    config["global"]["scrape_interval"] = f"{scrape_interval_s}s"
    config["global"]["evaluation_interval"] = f"{evaluation_interval_s}s"
    config["rule_files"] = [str(DEPLOY_CONFIG.parent / f) for f in config.get("rule_files", [])]
    for job in config["scrape_configs"]:
        port = service_ports[job["job_name"]]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    return config


def test_config(
    service_ports: dict[str, int], rule_files: list[Path], every_s: int = 1
) -> dict[str, Any]:
    """A configuration for tests: ``service_ports``' jobs on the loopback scraped, and
    ``rule_files`` evaluated, every ``every_s`` seconds (the fault drills', the
    dashboards' check)."""
    return {
        "global": {"scrape_interval": f"{every_s}s", "evaluation_interval": f"{every_s}s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in service_ports.items()
        ],
    }


def command(config_path: Path, data_dir: Path, port: int) -> list[str]:
    return [
        str(BINARY),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
        f"--web.local-assets={ASSETS}/",
    ]
