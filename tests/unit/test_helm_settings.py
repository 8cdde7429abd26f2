"""What deploy/helm/tenure renders, against the code: every variable is a setting of the
process it is given to and the settings build from them; the probes reach routes the
services serve on the ports their settings say; the pods run as the image's unprivileged
user on a read-only root filesystem; Kafka and PostgreSQL TLS files are mounted where the
variables say; the playbooks and model given as values load as the image's do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from common.clock import FakeClock
from common.db import create_engine
from common.kafka import FakePublisher, topic_configs
from common.runtime import metrics_app
from common.settings import CommonSettings
from common.topics import Topic
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from scoring.domain.model import DEFAULT_MODEL_PATH, load_model
from tests.unit.helm_chart import (
    CHART,
    LIBPQ_VARS,
    PRODUCTION,
    SERVICES,
    container,
    env_entries,
    mounted_file,
    of_kind,
    pod_specs,
    render,
    resolve_env,
    value_sets,
    values_file,
)
from tests.unit.test_deploy import COMMON_VARS, env_names, settings_classes

# The existing Secret values-production.yaml names, as an operator would create it.
PRODUCTION_SECRETS = {
    "tenure-secrets": {
        "database-url": "postgresql+asyncpg://tenure:pw@pg.internal.example.com:5432/tenure",
        "link-secret": "a-link-secret-from-the-operator",
        "webhook-secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3",
        "smtp-password": "smtp",
        "kafka-sasl-password": "scram",
        "inbound-secret": "an-inbound-secret-of-some-length",
    }
}
UNREACHABLE_DATABASE = "postgresql+asyncpg://tenure:x@127.0.0.1:1/tenure"


def allowed_vars(component: str) -> set[str]:
    own = env_names(settings_classes()[component]) if component in SERVICES else set()
    return COMMON_VARS | own | LIBPQ_VARS


def build_settings(
    objects: list[Any], component: str, monkeypatch: pytest.MonkeyPatch, **overrides: str
) -> Any:
    """The component's settings built from its rendered environment (as in its pod)."""
    for key in list(os.environ):
        if key.upper().startswith(("TENURE_", "PG")):
            monkeypatch.delenv(key)
    env = resolve_env(objects, component, PRODUCTION_SECRETS)
    for key, value in {**env, **overrides}.items():
        monkeypatch.setenv(key, value)
    cls = settings_classes()[component] if component in SERVICES else CommonSettings
    return cls()


@pytest.mark.parametrize("values", ["minimal", "production", "everything"])
def test_every_rendered_variable_is_a_setting_of_that_process(values: str, tmp_path: Path) -> None:
    objects = render(value_sets(tmp_path)[values])
    specs = pod_specs(objects)
    assert set(specs) == {*SERVICES, "migrate", "topics"}
    for component in specs:
        names = [entry["name"] for entry in env_entries(objects, component)]
        assert len(names) == len(set(names)), f"{component}: a variable set twice"
        unknown = set(names) - allowed_vars(component)
        assert not unknown, f"{component} is given what it does not read: {sorted(unknown)}"


@pytest.mark.parametrize("values", ["minimal", "production", "everything"])
@pytest.mark.parametrize("component", [*SERVICES, "migrate", "topics"])
def test_the_settings_build_from_what_is_rendered(
    values: str, component: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every required setting is set and every value validates (a bad one would stop the
    pod at start-up)."""
    objects = render(value_sets(tmp_path)[values])
    build_settings(objects, component, monkeypatch)
    if component in SERVICES:
        cls = settings_classes()[component]
        prefix = cls.model_config["env_prefix"]
        required = {f"{prefix}{f}".upper() for f, i in cls.model_fields.items() if i.is_required()}
        missing = required - set(resolve_env(objects, component, PRODUCTION_SECRETS))
        assert not missing, f"{component} misses {missing}"


def test_more_settings_from_env_values_win_over_the_charts(tmp_path: Path) -> None:
    """``env`` (every process) and ``<service>.env`` add settings or replace the chart's,
    the service's winning; each variable is set once."""
    objects = render(value_sets(tmp_path)["everything"])
    ingest = {e["name"]: e.get("value") for e in env_entries(objects, "ingest")}
    assert ingest["TENURE_INGEST_WORKERS"] == "4"
    assert ingest["TENURE_LOG_LEVEL"] == "DEBUG"
    assert ingest["TENURE_PRODUCER_REQUEST_TIMEOUT_MS"] == "20000"
    for component in ("scoring", "migrate", "topics"):
        env = {e["name"]: e.get("value") for e in env_entries(objects, component)}
        assert env["TENURE_LOG_LEVEL"] == "WARNING", component
        assert env["TENURE_PRODUCER_REQUEST_TIMEOUT_MS"] == "20000", component


def test_a_process_gets_only_the_connections_it_uses() -> None:
    """Scoring and the topics job never open PostgreSQL, migrate never Kafka: they are not
    given the database URL or the Kafka credentials, nor their certificates."""
    objects = render((PRODUCTION,))
    for component in pod_specs(objects):
        names = {entry["name"] for entry in env_entries(objects, component)}
        database = {"TENURE_DATABASE_URL", *LIBPQ_VARS} & names
        kafka = {name for name in names if name.startswith("TENURE_KAFKA_")}
        assert bool(database) == (component not in ("scoring", "topics")), component
        assert bool(kafka) == (component != "migrate"), component
        volumes = {volume["name"] for volume in pod_specs(objects)[component]["volumes"]}
        assert ("postgresql-ca" in volumes) == bool(database), component
        assert ("kafka-tls" in volumes) == bool(kafka), component


async def test_probes_reach_routes_on_the_ports_the_settings_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ingest.api import create_app
    from notifier.entrypoints.api import create_api as notifier_api
    from orchestrator.entrypoints.api import create_api as orchestrator_api
    from orchestrator.entrypoints.deps import Deps

    objects = render((PRODUCTION,))
    for component in SERVICES:
        settings = build_settings(
            objects, component, monkeypatch, TENURE_DATABASE_URL=UNREACHABLE_DATABASE
        )
        spec = container(objects, component)
        ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
        if component == "scoring":
            assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", ports["metrics"])
            app: Any = metrics_app()  # scoring serves only this (common.runtime.serve_metrics)
        else:
            assert (settings.host, settings.port) == ("0.0.0.0", ports["http"])
            assert settings.metrics_port == ports["metrics"] and settings.docs is False
            if component == "ingest":
                app = create_app(settings, publisher=FakePublisher())
            elif component == "notifier":
                app = notifier_api(settings, FakePublisher(), FakeClock())
            else:
                deps = Deps(
                    engine=create_engine(UNREACHABLE_DATABASE),
                    playbooks=load_playbooks(SHIPPED),
                    clock=FakeClock(),
                    topic_prefix=settings.common.topic_prefix,
                )
                app = orchestrator_api(deps, settings=settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pod") as client:
            for kind in ("readinessProbe", "livenessProbe"):
                probe = spec[kind]["httpGet"]
                assert probe["port"] in ports, f"{component} {kind}: no port {probe['port']}"
                answer = await client.get(probe["path"])
                if kind == "livenessProbe":  # alive whatever Kafka and PostgreSQL do
                    assert answer.status_code == 200, f"{component}: {probe} -> {answer}"
                else:  # served: ready (200) or not (503, PostgreSQL is unreachable here)
                    assert answer.status_code in (200, 503), f"{component}: {probe} -> {answer}"
        if component != "scoring":
            assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"


def image_user() -> tuple[int, int]:
    from tests.unit.test_deploy import final_stage

    users = [args for keyword, args in final_stage() if keyword == "USER"]
    uid, _, gid = users[-1].partition(":")
    return int(uid), int(gid)


@pytest.mark.parametrize("values", ["minimal", "production", "everything"])
def test_pods_run_unprivileged_on_a_read_only_root(values: str, tmp_path: Path) -> None:
    objects = render(value_sets(tmp_path)[values])
    uid, gid = image_user()
    for component, spec in pod_specs(objects).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid)
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        (only,) = spec["containers"]
        ctx = only["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True, component
        assert ctx["allowPrivilegeEscalation"] is False and ctx["privileged"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"] and "add" not in ctx["capabilities"]
        assert ctx["runAsNonRoot"] is True and ctx["seccompProfile"]["type"] == "RuntimeDefault"
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        for volume in volumes.values():
            assert {"emptyDir", "secret", "configMap"} & set(volume), f"{component}: {volume}"
        writable = {
            m["mountPath"]: volumes[m["name"]]
            for m in only["volumeMounts"]
            if not m.get("readOnly")
        }
        # the only writable paths: /tmp, and scoring's RocksDB directory
        assert "emptyDir" in writable.pop("/tmp"), component
        if component == "scoring":
            env = {e["name"]: e.get("value") for e in only["env"]}
            data = writable.pop(env["TENURE_SCORING_DATA_DIR"])
            assert "emptyDir" in data
        assert not writable, f"{component}: writable {sorted(writable)}"


def test_kafka_sasl_ssl_and_its_ca_reach_every_kafka_client() -> None:
    objects = render((PRODUCTION,))
    for component in ("ingest", "scoring", "orchestrator", "notifier", "topics"):
        env = {e["name"]: e for e in env_entries(objects, component)}
        assert env["TENURE_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["TENURE_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        assert env["TENURE_KAFKA_SASL_USERNAME"]["value"] == "tenure"
        password = env["TENURE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert (password["name"], password["key"]) == ("tenure-secrets", "kafka-sasl-password")
        source = mounted_file(objects, component, env["TENURE_KAFKA_SSL_CAFILE"]["value"])
        assert source == ("secret:tenure-kafka-ca", "ca.crt"), component
        assert "TENURE_KAFKA_SSL_CERTFILE" not in env  # no client certificate in the example


def test_mutual_tls_mounts_the_client_certificate_and_key() -> None:
    sets = (
        "kafka.securityProtocol=SSL",
        "kafka.tls.existingSecret=kafka-client",
        "kafka.tls.caKey=ca.pem",
        "kafka.tls.certKey=client.pem",
        "kafka.tls.keyKey=client.key",
    )
    objects = render(sets=sets)
    for component in ("ingest", "scoring", "orchestrator", "notifier", "topics"):
        env = {e["name"]: e.get("value") for e in env_entries(objects, component)}
        assert "TENURE_KAFKA_SASL_MECHANISM" not in env
        for variable, key in (
            ("TENURE_KAFKA_SSL_CAFILE", "ca.pem"),
            ("TENURE_KAFKA_SSL_CERTFILE", "client.pem"),
            ("TENURE_KAFKA_SSL_KEYFILE", "client.key"),
        ):
            path = env[variable]
            assert path is not None
            assert mounted_file(objects, component, path) == ("secret:kafka-client", key)


def test_the_production_topics_are_replicated_three_times_with_two_in_sync(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The topics Job of the production example creates what docs/operations.md says."""
    objects = render((PRODUCTION,))
    settings = build_settings(objects, "topics", monkeypatch)
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (3, 2)
    assert topic_configs(settings, Topic.EVENTS_USAGE)["retention.ms"] == "1209600000"
    assert topic_configs(settings, Topic.SCORES)["cleanup.policy"] == "compact"
    scoring = build_settings(objects, "scoring", monkeypatch)  # faust's changelogs too
    assert scoring.common.topic_replication_factor == 3


def test_postgresql_verify_full_with_the_mounted_ca() -> None:
    objects = render((PRODUCTION,))
    for component in ("ingest", "orchestrator", "notifier", "migrate"):
        env = {e["name"]: e.get("value") for e in env_entries(objects, component)}
        assert env["PGSSLMODE"] == "verify-full", component
        path = env["PGSSLROOTCERT"]
        assert path is not None
        assert mounted_file(objects, component, path) == ("secret:tenure-postgresql-ca", "ca.crt")


def test_playbooks_and_model_given_as_values_load_as_the_images_do(tmp_path: Path) -> None:
    shipped = {path.name: path.read_text() for path in sorted(SHIPPED.glob("*.yaml"))}
    overrides = values_file(
        tmp_path,
        "content.yaml",
        {
            "orchestrator": {"playbooks": shipped},
            "scoring": {"model": DEFAULT_MODEL_PATH.read_text()},
        },
    )
    objects = render(value_sets(tmp_path)["minimal"] + (overrides,))
    maps = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "ConfigMap"}

    env = {e["name"]: e.get("value") for e in env_entries(objects, "orchestrator")}
    folder = env["TENURE_ORCHESTRATOR_PLAYBOOKS_DIR"]
    assert folder is not None
    source, key = mounted_file(objects, "orchestrator", f"{folder}/win_back.yaml")
    assert key == "win_back.yaml"
    data = maps[source.partition(":")[2]]["data"]
    assert data == shipped
    copied = tmp_path / "playbooks"
    copied.mkdir()
    for name, text in data.items():
        (copied / name).write_text(text)
    assert load_playbooks(copied) == load_playbooks(SHIPPED)

    env = {e["name"]: e.get("value") for e in env_entries(objects, "scoring")}
    model_path = env["TENURE_SCORING_MODEL_PATH"]
    assert model_path is not None
    source, key = mounted_file(objects, "scoring", model_path)
    copied_model = tmp_path / "model.yaml"
    copied_model.write_text(maps[source.partition(":")[2]]["data"][key])
    assert load_model(copied_model) == load_model(DEFAULT_MODEL_PATH)

    # without them, the image's (the settings' defaults)
    plain = render()
    assert not [obj for obj in plain if obj["kind"] == "ConfigMap"]
    for component, variable in (
        ("orchestrator", "TENURE_ORCHESTRATOR_PLAYBOOKS_DIR"),
        ("scoring", "TENURE_SCORING_MODEL_PATH"),
    ):
        assert variable not in {e["name"] for e in env_entries(plain, component)}


def test_existing_configmaps_replace_the_charts() -> None:
    sets = ("orchestrator.playbooksConfigMap=my-playbooks", "scoring.modelConfigMap=my-model")
    objects = render(sets=sets)
    assert not [obj for obj in objects if obj["kind"] == "ConfigMap"]
    env = {e["name"]: e.get("value") for e in env_entries(objects, "scoring")}
    assert mounted_file(objects, "scoring", str(env["TENURE_SCORING_MODEL_PATH"])) == (
        "configMap:my-model",
        "model.yaml",
    )
    env = {e["name"]: e.get("value") for e in env_entries(objects, "orchestrator")}
    source, _ = mounted_file(
        objects, "orchestrator", f"{env['TENURE_ORCHESTRATOR_PLAYBOOKS_DIR']}/x.yaml"
    )
    assert source == "configMap:my-playbooks"


def test_the_image_and_the_chart_agree_on_user_and_data_dir() -> None:
    from tests.unit.test_deploy import dockerfile_env, final_stage

    uid, gid = image_user()
    assert uid > 0 and gid > 0, "the image must not run as root"
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert (
        defaults["podSecurityContext"]["runAsUser"],
        defaults["securityContext"]["runAsUser"],
    ) == (uid, uid)
    runs = [args for keyword, args in final_stage() if keyword == "RUN"]
    assert any(f"--uid {uid}" in run and f"--gid {gid}" in run for run in runs), runs
    keywords = [keyword for keyword, _ in final_stage()]
    last_user = max(i for i, keyword in enumerate(keywords) if keyword == "USER")
    assert "RUN" not in keywords[last_user:], "nothing runs as root after USER"
    image = dockerfile_env()
    assert image["TENURE_SCORING_DATA_DIR"] == defaults["scoring"]["dataDir"]
    assert image["PYTHONDONTWRITEBYTECODE"] == "1", "no .pyc written next to the code"
    scoring = of_kind(render(), "Deployment")["scoring"]
    assert scoring["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == gid


def test_compose_runs_the_image_read_only_too() -> None:
    from tests.unit.test_deploy import effective_env, service, tenure_image_services

    for name in tenure_image_services():
        spec = service(name)
        assert spec.get("read_only") is True, f"{name} runs with a writable root"
        assert "/tmp" in spec.get("tmpfs", []), name
    data_dir = effective_env("scoring")["TENURE_SCORING_DATA_DIR"]
    volumes = [str(v).split(":")[1] for v in service("scoring").get("volumes", [])]
    assert data_dir in volumes, f"scoring writes {data_dir}, which is no volume"
