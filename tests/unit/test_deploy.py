"""docker-compose.yml, deploy/Dockerfile, Prometheus and Grafana, cross-checked against the code.

There is no Docker engine in CI, so nothing here starts a container: the files are parsed
and compared with what the code declares (settings classes, ports, modules, metrics).
"""

from __future__ import annotations

import ast
import base64
import functools
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client import make_wsgi_app
from prometheus_client.metrics import MetricWrapperBase
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from common.clock import FakeClock
from common.kafka import FakePublisher
from common.settings import CommonSettings, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
# Series Prometheus makes itself, with their labels, that a panel may query.
PROMETHEUS_SERIES = {"up": ("job", "instance")}

SERVICES = ("ingest", "scoring", "orchestrator", "notifier")
# (host setting, port setting) each service listens with.
LISTEN = {
    "ingest": ("host", "port"),
    "scoring": ("metrics_host", "metrics_port"),
    "orchestrator": ("host", "port"),
    "notifier": ("host", "port"),
}
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count"),
}


# -- reading the files ---------------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def interpolate(value: object) -> str:
    """A compose value as the container sees it (``${NAME:-default}`` → default)."""
    text = "" if value is None else str(value)
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", text).replace("$$", "$")


def compose_env(name: str) -> dict[str, str]:
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: interpolate(value) for key, value in env.items()}


@functools.cache
def final_stage() -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments) after its last FROM, continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in final_stage():
        if keyword == "ENV":
            tokens = shlex.split(args)
            if "=" not in tokens[0]:  # legacy form: ENV KEY value
                env[tokens[0]] = " ".join(tokens[1:])
            else:
                for token in tokens:
                    key, _, value = token.partition("=")
                    env[key] = value
    return env


def dockerfile_cmd() -> list[str]:
    args = [args for keyword, args in final_stage() if keyword == "CMD"][-1]
    return json.loads(args) if args.startswith("[") else ["/bin/sh", "-c", args]


def uses_tenure_image(name: str) -> bool:
    build = service(name).get("build")
    return isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile"


def tenure_image_services() -> list[str]:
    return [name for name in compose()["services"] if uses_tenure_image(name)]


def command(name: str) -> list[str]:
    cmd = service(name).get("command")
    if cmd is None:
        return dockerfile_cmd()
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def effective_env(name: str) -> dict[str, str]:
    """What a container sees: the image's ENV, then the compose environment."""
    return {**(dockerfile_env() if uses_tenure_image(name) else {}), **compose_env(name)}


# -- what the code declares ----------------------------------------------------------


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Variables a settings class reads; ``common`` is a nested class, not a variable."""
    prefix = cls.model_config.get("env_prefix", "")
    return {f"{prefix}{field}".upper() for field in cls.model_fields if field != "common"}


@functools.cache
def settings_classes() -> dict[str, type[ServiceSettings]]:
    classes = {}
    for name in SERVICES:
        module = importlib.import_module(f"{name}.settings")
        found = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, ServiceSettings)
            and obj.__module__ == module.__name__
        ]
        assert len(found) == 1, f"{name}.settings should declare one settings class: {found}"
        classes[name] = found[0]
    return classes


COMMON_VARS = env_names(CommonSettings)


def all_setting_vars() -> set[str]:
    return COMMON_VARS.union(*(env_names(cls) for cls in settings_classes().values()))


def built_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's settings as built in its container (validation errors fail the test)."""
    for key in list(os.environ):
        if key.upper().startswith("TENURE_"):
            monkeypatch.delenv(key)
    for key, value in effective_env(name).items():
        if key.startswith("TENURE_"):
            monkeypatch.setenv(key, value)
    return settings_classes()[name]()


@functools.cache
def declared_metrics() -> dict[str, tuple[str, MetricWrapperBase]]:
    """Prometheus series name → (service, metric) for every metric in services/*/metrics.py."""
    series: dict[str, tuple[str, MetricWrapperBase]] = {}
    for path in sorted(ROOT.glob("services/*/metrics.py")):
        module = importlib.import_module(f"{path.parent.name}.metrics")
        for metric in vars(module).values():
            if isinstance(metric, MetricWrapperBase):
                for suffix in SERIES_SUFFIXES[str(metric._type)]:
                    series[metric._name + suffix] = (path.parent.name, metric)
    return series


def python_modules(cmd: list[str]) -> list[str]:
    """``python -m X`` → [X]; ``python -c CODE`` → the modules CODE imports (checked below)."""
    assert cmd[0] in ("python", "python3"), cmd
    if cmd[1] == "-m":
        return [cmd[2]]
    assert cmd[1] == "-c", cmd
    modules = []
    for node in ast.walk(ast.parse(cmd[2])):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"{node.module} has no {missing}"
            modules.append(node.module)
    return modules


def published(name: str) -> set[tuple[int, int]]:
    """(host port, container port) pairs of a compose service."""
    pairs = set()
    for entry in service(name).get("ports", []):
        host, _, container = str(entry).rpartition(":")
        pairs.add((int(host.rpartition(":")[2]), int(container.split("/")[0])))
    return pairs


def scrape_jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(PROMETHEUS.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


# -- the tests -----------------------------------------------------------------------


def test_compose_runs_the_whole_system() -> None:
    names = set(compose()["services"])
    assert {*SERVICES, "kafka", "postgres", "prometheus", "grafana"} <= names
    for name in SERVICES:
        assert uses_tenure_image(name), f"{name} should be built from deploy/Dockerfile"
        assert python_modules(command(name)) == [name]


@pytest.mark.parametrize("name", sorted(compose()["services"]))
def test_every_tenure_variable_is_a_setting_of_that_process(name: str) -> None:
    module = python_modules(command(name))[0] if uses_tenure_image(name) else None
    allowed = COMMON_VARS | (env_names(settings_classes()[module]) if module in SERVICES else set())
    unknown = {key for key in compose_env(name) if key.startswith("TENURE_")} - allowed
    assert not unknown, f"{name}: not settings it reads: {sorted(unknown)}"


def test_every_tenure_variable_of_the_image_is_a_setting() -> None:
    unknown = {key for key in dockerfile_env() if key.startswith("TENURE_")} - all_setting_vars()
    assert not unknown, f"deploy/Dockerfile sets unknown settings: {sorted(unknown)}"


@pytest.mark.parametrize("name", SERVICES)
def test_required_settings_are_set_and_valid(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = settings_classes()[name]
    prefix = cls.model_config["env_prefix"]
    required = {
        f"{prefix}{field}".upper() for field, info in cls.model_fields.items() if info.is_required()
    }
    assert not required - set(effective_env(name)), f"{name} misses {required}"
    built_settings(name, monkeypatch)  # every value validates


@pytest.mark.parametrize("name", SERVICES)
def test_ports_match_settings_and_prometheus(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    host_field, port_field = LISTEN[name]
    settings = built_settings(name, monkeypatch)
    default = settings_classes()[name].model_fields[port_field].default
    port = getattr(settings, port_field)
    assert port == default, f"{name} listens on {port}, the documented default is {default}"
    assert getattr(settings, host_field) == "0.0.0.0", f"{name} must listen on every interface"
    assert (port, port) in published(name)
    exposed = {
        word for keyword, args in final_stage() if keyword == "EXPOSE" for word in args.split()
    }
    assert str(port) in exposed, f"deploy/Dockerfile does not EXPOSE {port}"
    assert scrape_jobs()[name]["static_configs"][0]["targets"] == [f"{name}:{port}"]
    health = " ".join(service(name)["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/" in health


def test_every_published_port_is_bound_to_localhost_only() -> None:
    """Issue 13, item 17: the local stack's ports (with its development key and secrets)
    used to be published on every interface of the host."""
    for name, spec in compose()["services"].items():
        for entry in spec.get("ports", []):
            host_ip, *ports = str(entry).split(":")  # HOST_IP:HOST_PORT:CONTAINER_PORT
            assert host_ip == "127.0.0.1" and len(ports) == 2, f"{name} publishes {entry!r}"


def test_the_local_secrets_can_be_replaced_from_the_environment() -> None:
    """The development key and secrets are defaults of the compose file, not fixed."""
    raw = COMPOSE.read_text()
    for variable in (
        "TENURE_INGEST_API_KEY",
        "TENURE_NOTIFIER_LINK_SECRET",
        "TENURE_NOTIFIER_WEBHOOK_SECRET",
    ):
        assert re.search(rf"{variable}: \$\{{{variable}:-[^}}]+\}}", raw), variable


def test_prometheus_targets_are_compose_services() -> None:
    for job in scrape_jobs().values():
        for static in job["static_configs"]:
            for target in static["targets"]:
                assert target.rpartition(":")[0] in compose()["services"], target


async def test_metrics_paths_answer_200(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest.api import create_app
    from notifier.entrypoints.api import create_api as notifier_api
    from orchestrator.entrypoints.api import create_api as orchestrator_api

    apps = {
        "ingest": create_app(built_settings("ingest", monkeypatch), publisher=FakePublisher()),
        "orchestrator": orchestrator_api(),
        "notifier": notifier_api(
            built_settings("notifier", monkeypatch), FakePublisher(), FakeClock()
        ),
    }
    jobs = scrape_jobs()
    for name, app in apps.items():
        path = jobs[name].get("metrics_path", "/metrics")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get(path)
        assert response.status_code == 200, f"{name} answers {response.status_code} on {path}"
        assert "# TYPE" in response.text

    # scoring: a listener of its own (common.runtime.serve_metrics), prometheus_client's app
    statuses: list[str] = []
    path = jobs["scoring"].get("metrics_path", "/metrics")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": ""}
    make_wsgi_app()(environ, lambda status, headers: statuses.append(status))
    assert statuses[0].startswith("200")


def test_promtool_accepts_the_prometheus_config() -> None:
    fetched = ROOT / ".stack" / "prometheus" / "usr" / "bin" / "promtool"  # `make prometheus`
    promtool = str(fetched) if fetched.exists() else shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not available (`make prometheus` could not fetch it)")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def promql(expr: str) -> tuple[set[str], set[str], set[str]]:
    """(metric names, label names, grouping labels) of a PromQL expression; enough for ours."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    grouping = {
        label.strip()
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
        for label in group.split(",")
        if label.strip()
    }
    labels = grouping | {
        label
        for block in re.findall(r"\{([^}]*)\}", expr)
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", block)
    }
    bare = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)|\{[^}]*\}|\[[^\]]*\]|\"\"", " ", expr)
    keywords = {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}
    names = {
        m.group(1)
        for m in re.finditer(r"([A-Za-z_:][\w:]*)\s*(\()?", bare)
        if not m.group(2) and m.group(1) not in keywords
    }
    return names, labels, grouping


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    """(dashboard file: panel title, target) of every Prometheus query of every dashboard
    (another datasource's targets, such as PostgreSQL's, are not PromQL)."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
        found += [
            (f"{path.name}: {panel['title']}", target)
            for panel in panels
            for target in panel.get("targets", [])
            if "expr" in target
        ]
    return found


def test_dashboard_queries_only_declared_metrics_and_labels() -> None:
    declared = declared_metrics()
    targets = dashboard_targets()
    assert targets
    for title, target in targets:
        names, labels, grouping = promql(target["expr"])
        assert names, f"{title}: no metric in {target['expr']!r}"
        unknown = names - set(declared) - set(PROMETHEUS_SERIES)
        assert not unknown, f"{title}: undeclared metrics {sorted(unknown)}"
        known_labels = {"le", "job", "instance"} | {
            label
            for name in names
            for label in (
                PROMETHEUS_SERIES[name]
                if name in PROMETHEUS_SERIES
                else declared[name][1]._labelnames
            )
        }
        assert labels <= known_labels, f"{title}: unknown labels {sorted(labels - known_labels)}"
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        # Without an aggregation every label of the series is there; with one, its grouping.
        aggregated = re.search(r"\b(sum|max|min|avg|count|histogram_quantile)\b", target["expr"])
        shown = grouping if aggregated else known_labels
        assert legend <= shown, f"{title}: legend uses {sorted(legend - shown)}"


def test_the_overview_covers_every_service_and_each_has_a_dashboard() -> None:
    declared = declared_metrics()
    used = {
        declared[name][0]
        for title, t in dashboard_targets()
        if title.startswith("tenure.json:")
        for name in promql(t["expr"])[0]
        if name in declared
    }
    assert used == set(SERVICES)
    uids = {json.loads(p.read_text())["uid"] for p in DASHBOARDS.glob("*.json")}
    assert {f"tenure-{name}" for name in SERVICES} <= uids


def mounts(name: str) -> dict[str, str]:
    """Bind mounts of a compose service: container path → repository path."""
    pairs = (str(v).split(":") for v in service(name).get("volumes", []))
    return {target: source for source, target, *_ in pairs if source.startswith("./")}


def test_bind_mounts_exist() -> None:
    for name in compose()["services"]:
        for source in mounts(name).values():
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_grafana_is_provisioned_from_the_repository() -> None:
    grafana, prometheus = mounts("grafana"), mounts("prometheus")
    assert grafana["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert prometheus["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    provisioning = GRAFANA / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and (url.port, 9090) in published("prometheus")
    (provider,) = yaml.safe_load((provisioning / "dashboards/tenure.yml").read_text())["providers"]
    assert grafana[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    for title, target in dashboard_targets():
        assert target["datasource"]["uid"] == datasource["uid"], title


@pytest.mark.parametrize("name", ["Dockerfile", *tenure_image_services()])
def test_commands_run_modules_that_exist(name: str) -> None:
    cmd = dockerfile_cmd() if name == "Dockerfile" else command(name)
    for module in python_modules(cmd):
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{name}: no module {module}"
        if cmd[1] == "-m" and spec.submodule_search_locations is not None:
            assert importlib.util.find_spec(f"{module}.__main__"), f"{module} has no __main__"


def test_one_shots_run_before_the_services() -> None:
    codes = {name: command(name)[2] for name in tenure_image_services() if command(name)[1] == "-c"}
    migrate = [name for name, code in codes.items() if "upgrade(" in code]
    topics = [name for name, code in codes.items() if "ensure_topics(" in code]
    assert len(migrate) == 1 and len(topics) == 1, codes
    for one_shot in (*migrate, *topics):
        assert service(one_shot).get("restart") == "no"
    for name in SERVICES:
        depends = service(name)["depends_on"]
        assert depends[topics[0]]["condition"] == "service_completed_successfully"
        uses_database = any(
            "create_engine(" in p.read_text() for p in (ROOT / "services" / name).rglob("*.py")
        )
        if uses_database:
            assert depends[migrate[0]]["condition"] == "service_completed_successfully", name


def test_depends_on_conditions_can_be_met() -> None:
    for name, spec in compose()["services"].items():
        depends = spec.get("depends_on") or {}
        for target, how in depends.items() if isinstance(depends, dict) else []:
            condition = how.get("condition", "service_started")
            if condition == "service_healthy":
                assert service(target).get("healthcheck", {}).get("test"), (
                    f"{name} waits on {target}'s health, which has no check"
                )
            if condition == "service_completed_successfully":
                assert service(target).get("restart") == "no", f"{target} is a one-shot"


def test_kafka_and_postgres_are_wired_to_the_settings() -> None:
    kafka = compose_env("kafka")
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and kafka["CLUSTER_ID"]
    assert kafka.get("KAFKA_LOG_CLEANER_ENABLE", "true").lower() == "true"
    advertised = {urlsplit(url).netloc for url in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    postgres = compose_env("postgres")
    for name in tenure_image_services():
        env = effective_env(name)
        if "TENURE_KAFKA_BOOTSTRAP" in env:
            bootstrap = env["TENURE_KAFKA_BOOTSTRAP"]
            assert bootstrap in advertised and bootstrap.startswith("kafka:"), (name, bootstrap)
        if "TENURE_DATABASE_URL" in env:
            url = make_url(env["TENURE_DATABASE_URL"])
            assert url.drivername == "postgresql+asyncpg" and url.host == "postgres", name
            assert (url.username, url.password, url.database) == (
                postgres["POSTGRES_USER"],
                postgres["POSTGRES_PASSWORD"],
                postgres["POSTGRES_DB"],
            )


def test_notifier_reaches_the_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = built_settings("notifier", monkeypatch)
    args = command("sinks")
    assert python_modules(args) == ["devstack"] and args[3] == "sinks"
    option = dict(zip(args[4::2], args[5::2], strict=True))
    assert option["--host"] == "0.0.0.0"  # reachable from the notifier's container
    host = "sinks"
    assert (settings.smtp_host, settings.smtp_port) == (host, int(option["--smtp-port"]))
    for url in (settings.webhook_csm_url, settings.webhook_escalation_url):
        assert urlsplit(url).netloc == f"{host}:{option['--webhook-port']}", url
    data = {target for source, target, *_ in (v.split(":") for v in service("sinks")["volumes"])}
    for folder in (option["--mail-dir"], option["--webhook-dir"]):
        assert any(folder.startswith(target) for target in data), f"{folder} is not a volume"
    secret = settings.webhook_secret.get_secret_value()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24
