"""The layout STYLE.md promises: domains free of frameworks, packages where they belong."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_DOMAIN = {
    "fastapi",
    "faust",
    "aiokafka",
    "sqlalchemy",
    "httpx",
    "asyncpg",
    "uvicorn",
    "aiosmtplib",
    "prometheus_client",
    "alembic",
    "mode",
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


DOMAIN_FILES = sorted(ROOT.glob("services/*/domain/**/*.py"))


def test_there_are_domain_modules() -> None:
    assert len(DOMAIN_FILES) >= 6


@pytest.mark.parametrize("path", DOMAIN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_domain_imports_no_framework(path: Path) -> None:
    assert not imported_roots(path) & FORBIDDEN_IN_DOMAIN


def test_aiokafka_is_imported_only_by_the_common_kafka_package() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in ROOT.glob("services/**/*.py")
        if "aiokafka" in imported_roots(p)
    ] + [
        str(p.relative_to(ROOT))
        for p in ROOT.glob("libs/**/*.py")
        if "aiokafka" in imported_roots(p) and ROOT / "libs/common/kafka" not in p.parents
    ]
    assert offenders == []


def test_one_consumer_loop_and_one_retry_helper() -> None:
    """Consumers poll only in the shared runner (common.kafka.runner, over the consumer
    adapters beside it), and retry only through common.outage.ride_out."""
    code = [*ROOT.glob("services/**/*.py"), *ROOT.glob("libs/**/*.py")]
    retrying = [
        str(p.relative_to(ROOT))
        for p in code
        if imported_roots(p) & {"tenacity", "stamina", "backoff"}
    ]
    assert retrying == ["libs/common/outage.py"]
    polls = re.compile(r"await [\w.]+\.(poll|getmany)\(")
    polling = sorted(str(p.relative_to(ROOT)) for p in code if polls.search(p.read_text()))
    assert polling == [
        "libs/common/kafka/admin.py",  # committed_headers: reads a topic to its end
        "libs/common/kafka/consumer.py",  # follow(): a reader without a group
        "libs/common/kafka/lag.py",  # GroupLagProbe.backlog: the record at a committed offset
        "libs/common/kafka/runner.py",
    ]


def test_top_level_layout() -> None:
    for name in (
        "services/ingest",
        "services/scoring",
        "services/orchestrator",
        "services/notifier",
        "libs/common",
        "deploy",
        "tests",
        "docs",
        "bench",
        "docker-compose.yml",
        "Makefile",
        "README.md",
        "pyproject.toml",
        ".ci/run",
    ):
        assert (ROOT / name).exists(), name
    for package in ROOT.glob("services/*/"):
        assert (package / "__init__.py").exists(), package


def test_no_environment_reads_outside_settings() -> None:
    offenders = []
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("libs/**/*.py")]:
        if path.name == "settings.py":
            continue
        text = path.read_text()
        if "os.environ" in text or "os.getenv" in text:
            offenders.append(str(path.relative_to(ROOT)))
    # procs.py passes the environment on to children. PROMETHEUS_MULTIPROC_DIR is
    # prometheus_client's own switch: ingest sets it for its workers, metrics.py reads it.
    assert sorted(offenders) == [
        "libs/common/metrics.py",
        "libs/devstack/procs.py",
        "services/ingest/__main__.py",
    ]
