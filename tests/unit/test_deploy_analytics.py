"""The business dashboard's wiring: the datasource it names exists wherever it is
provisioned (docker-compose.yml and the Helm chart), with the read-only user, and its
queries read only what the role tenure_analytics may read (migration 0011).

Its queries run against PostgreSQL in tests/integration/test_portfolio_dashboard.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.unit.helm_chart import CHART, MINIMAL, PRODUCTION, of_kind, render, render_error
from tests.unit.test_deploy import compose_env, mounts, published, service

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "tenure-business.json"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "tenure-analytics.yml"
CHART_DASHBOARD = CHART / "files" / "tenure-business.json"
MIGRATION = ROOT / "libs" / "common" / "migrations" / "versions" / "0011_analytics_role.py"
ENABLED = (
    "grafana.business.enabled=true",
    "grafana.business.datasource.host=db.example.internal:5432",
    "grafana.business.datasource.password=pa$$word",
)


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def migration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migration_0011", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def queries() -> list[tuple[str, dict[str, Any], str]]:
    """(where, datasource, SQL) of every panel target and template variable."""
    board = dashboard()
    found = [
        (panel["title"], target["datasource"], target["rawSql"])
        for panel in board["panels"]
        for target in panel["targets"]
    ]
    found += [(f"${v['name']}", v["datasource"], v["query"]) for v in board["templating"]["list"]]
    return found


def provisioned() -> dict[str, Any]:
    (datasource,) = yaml.safe_load(DATASOURCE.read_text())["datasources"]
    return dict(datasource)


def test_every_query_uses_the_provisioned_datasource() -> None:
    datasource = provisioned()
    assert queries()
    for where, ref, _ in queries():
        assert ref == {"type": datasource["type"], "uid": datasource["uid"]}, where
    for panel in dashboard()["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
    prometheus = yaml.safe_load((DATASOURCE.with_name("prometheus.yml")).read_text())
    uids = [d["uid"] for d in prometheus["datasources"]] + [datasource["uid"]]
    assert len(set(uids)) == len(uids), "datasource uids must differ"


def test_queries_read_only_what_the_role_is_granted() -> None:
    readable = set(migration().READABLE)
    for where, _, sql in queries():
        relations = set(re.findall(r"\bFROM\s+(\w+)", sql, flags=re.IGNORECASE))
        assert relations, f"{where}: no FROM in {sql!r}"
        assert relations <= readable, f"{where} reads {sorted(relations - readable)}"
        assert re.match(r"\s*SELECT\b", sql, flags=re.IGNORECASE), where
        assert "\n" not in sql.strip(), f"{where}: a one-liner; the SQL belongs in a view"


def test_compose_gives_grafana_the_read_only_user() -> None:
    grafana, login = compose_env("grafana"), compose_env("analytics-login")
    postgres = compose_env("postgres")
    datasource = provisioned()
    # Every ${NAME} of the provisioning file is set in Grafana's environment.
    text = json.dumps(datasource)
    names = set(re.findall(r"\$\{?(\w+)", text))
    assert names and names <= set(grafana), sorted(names - set(grafana))
    assert datasource["user"] == "${ANALYTICS_DB_USER}"
    host, _, port = grafana["ANALYTICS_DB_HOST"].partition(":")
    assert host == "postgres" and int(port) == 5432
    assert grafana["ANALYTICS_DB_NAME"] == postgres["POSTGRES_DB"]
    # The user analytics-login makes is the one Grafana logs in as, with the same password,
    # which the environment can replace.
    assert login["ANALYTICS_DB_USER"] == grafana["ANALYTICS_DB_USER"] != postgres["POSTGRES_USER"]
    raw = service("grafana")["environment"]["ANALYTICS_DB_PASSWORD"]
    assert raw == service("analytics-login")["environment"]["ANALYTICS_DB_PASSWORD"]
    assert re.fullmatch(r"\$\{ANALYTICS_DB_PASSWORD:-[^}]+\}", raw)
    assert (login["PGHOST"], login["PGUSER"], login["PGDATABASE"]) == (
        "postgres",
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_DB"],
    )
    assert login["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"]


def test_compose_makes_the_login_user_after_the_migrations_and_before_grafana() -> None:
    login = service("analytics-login")
    assert login["restart"] == "no"
    assert login["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    grafana = service("grafana")["depends_on"]
    assert grafana["analytics-login"]["condition"] == "service_completed_successfully"
    sql = {target: source for target, source in mounts("analytics-login").items()}
    [(target, source)] = sql.items()
    assert source == "./deploy/postgres/analytics-login.sql"
    assert target in login["command"]
    assert (ROOT / source).read_text().count("GRANT tenure_analytics TO") == 1
    assert migration().ROLE == "tenure_analytics"
    assert mounts("grafana")["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert (5432, 5432) not in published("postgres")  # the dashboard reads it inside only


def test_the_chart_ships_the_same_dashboard() -> None:
    assert CHART_DASHBOARD.read_text() == DASHBOARD.read_text(), (
        "cp deploy/grafana/dashboards/tenure-business.json deploy/helm/tenure/files/"
    )


def chart_datasource(objects: list[Any], kind: str = "Secret") -> dict[str, Any]:
    """The datasource the chart provisions: in a Secret with the password, else a ConfigMap."""
    found = of_kind(objects, kind)["grafana-datasource"]
    assert found["metadata"]["labels"]["grafana_datasource"] == "1"
    (text,) = found["stringData" if kind == "Secret" else "data"].values()
    (datasource,) = yaml.safe_load(text)["datasources"]
    return dict(datasource)


def test_the_chart_provisions_the_datasource_the_dashboard_names() -> None:
    objects = render((MINIMAL,), ENABLED)
    datasource = chart_datasource(objects)
    compose_ds = provisioned()
    for key in ("name", "uid", "type"):
        assert datasource[key] == compose_ds[key], key
    assert urlsplit(f"//{datasource['url']}").hostname == "db.example.internal"
    assert datasource["user"] == "tenure_grafana"
    assert datasource["jsonData"]["database"] == "tenure"
    # Grafana expands $NAME in provisioning files: the password's $ are doubled.
    assert datasource["secureJsonData"]["password"] == "pa$$$$word"
    board = of_kind(objects, "ConfigMap")["grafana-dashboard"]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(board["data"]["tenure-business.json"])
    assert shipped == dashboard()
    uids = {ref["uid"] for _, ref, _ in queries()}
    assert uids == {datasource["uid"]}


def test_the_chart_takes_the_password_from_grafanas_environment() -> None:
    objects = render((PRODUCTION,), ("image.repository=r/tenure",))
    datasource = chart_datasource(objects, "ConfigMap")
    assert datasource["secureJsonData"]["password"] == "${ANALYTICS_DB_PASSWORD}"
    assert datasource["jsonData"]["sslmode"] == "verify-full"


def test_the_chart_renders_no_dashboard_unless_asked() -> None:
    objects = render((MINIMAL,))
    components = set(of_kind(objects, "Secret")) | set(of_kind(objects, "ConfigMap"))
    assert not {"grafana-datasource", "grafana-dashboard"} & components


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("grafana.business.enabled=true",), "grafana.business.datasource.host is required"),
        (
            ENABLED[:2],
            "grafana.business.datasource.password or grafana.business.datasource.existingSecret",
        ),
        ((*ENABLED, "grafana.business.datasource.existingSecret=s"), "exclude each other"),
        (
            (*ENABLED, "grafana.business.datasource.sslmode=prefer"),
            "grafana.business.datasource.sslmode must be",
        ),
    ],
)
def test_incomplete_dashboard_values_are_refused(sets: tuple[str, ...], message: str) -> None:
    assert message in render_error((MINIMAL,), sets)
