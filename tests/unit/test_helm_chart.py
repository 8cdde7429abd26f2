"""deploy/helm/tenure: Helm lints it, refuses incomplete values naming what is missing, and
every object it renders is valid against the Kubernetes schemas (kubernetes-validate,
which ships them: no cluster, no network).

The settings, security and wiring of what it renders: test_helm_settings.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit.helm_chart import (
    CHART,
    MINIMAL,
    PRODUCTION,
    RELEASE,
    ROOT,
    SERVICES,
    container,
    helm,
    of_kind,
    pod_specs,
    render,
    render_error,
    value_sets,
)
from tests.unit.test_deploy import command

# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.29.0", "1.37.0")
# Every value a deployment must set (ci/minimal-values.yaml sets exactly these).
REQUIRED = (
    "image.repository",
    "kafka.bootstrapServers",
    "secrets.databaseUrl",
    "secrets.linkSecret",
    "secrets.webhookSecret",
    "notifier.publicUrl",
    "notifier.smtp.host",
    "notifier.webhooks.csmUrl",
    "notifier.webhooks.escalationUrl",
)
# Fields of the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1) the chart
# uses; kubernetes-validate has no schema for custom resources.
SERVICE_MONITOR_SPEC = {"selector", "endpoints", "namespaceSelector", "jobLabel"}
SERVICE_MONITOR_ENDPOINT = {"port", "path", "interval", "scrapeTimeout", "scheme"}


def leaf_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        paths |= leaf_paths(value, f"{path}.") if isinstance(value, dict) else {path}
    return paths


def test_helm_lints_the_chart() -> None:
    for values in (MINIMAL, PRODUCTION):
        result = helm("lint", "--strict", str(CHART), "--values", str(values))
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_default_values_alone_are_refused() -> None:
    """values.yaml has no Kafka, database, secrets or public URL: nothing renders without."""
    assert "is required" in render_error(values=())


def test_minimal_values_set_exactly_the_required_ones() -> None:
    assert leaf_paths(yaml.safe_load(MINIMAL.read_text())) == set(REQUIRED)


@pytest.mark.parametrize("path", REQUIRED)
def test_a_missing_required_value_is_named(path: str) -> None:
    error = render_error(sets=(f"{path}=",))
    assert f"{path} is required" in error, error


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("notifier.publicUrl=http://links.example.com",), "notifier.publicUrl must be https://"),
        (("kafka.securityProtocol=TLS",), "kafka.securityProtocol must be one of"),
        (("kafka.securityProtocol=SASL_SSL",), "kafka.sasl.mechanism must be one of"),
        (
            ("kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism=SCRAM-SHA-512"),
            "kafka.sasl.username is required",
        ),
        (
            (
                "kafka.securityProtocol=SASL_SSL",
                "kafka.sasl.mechanism=SCRAM-SHA-512",
                "kafka.sasl.username=tenure",
            ),
            "secrets.kafkaSaslPassword is required",
        ),
        (("kafka.tls.existingSecret=ca",), "TLS needs SSL or SASL_SSL"),
        (
            ("kafka.securityProtocol=SSL", "kafka.tls.existingSecret=ca", "kafka.tls.certKey=c"),
            "kafka.tls.certKey and kafka.tls.keyKey go together",
        ),
        (("postgresql.sslmode=verify-full",), "needs postgresql.ca.existingSecret"),
        (("postgresql.sslmode=on",), "postgresql.sslmode must be one of"),
        (("secrets.webhookSecret=abc",), "secrets.webhookSecret must look like whsec_"),
        (("notifier.replyDomain=reply.example.com",), "notifier.replyDomain needs"),
        (("notifier.smtp.implicitTls=true",), "exclude each other"),
        (("orchestrator.playbooks.readme\\.md=x",), "is not a playbook file name"),
        (("notifier.ingress.enabled=true", "notifier.publicUrl=https://"), "ingress.host"),
    ],
)
def test_inconsistent_values_are_refused_with_the_reason(
    sets: tuple[str, ...], message: str
) -> None:
    error = render_error(sets=sets)
    assert message in error, error


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_object_is_valid_kubernetes(version: str, tmp_path: Path) -> None:
    errors = []
    for name, values in value_sets(tmp_path).items():
        objects = render(values)
        kinds = {obj["kind"] for obj in objects}
        assert {"Deployment", "Service", "PodDisruptionBudget", "Job"} <= kinds, name
        for obj in objects:
            if obj["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a custom resource: checked below
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = f"{name}: {obj['kind']} {obj['metadata']['name']}"
                errors.append(f"{where}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


def test_kubernetes_validate_catches_a_misspelt_field() -> None:
    """The validation above can fail: a field Kubernetes does not know is refused."""
    deployment = of_kind(render(), "Deployment")["ingest"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


def test_one_deployment_service_and_budget_per_service() -> None:
    objects = render((PRODUCTION,))
    deployments = of_kind(objects, "Deployment")
    services = of_kind(objects, "Service")
    budgets = of_kind(objects, "PodDisruptionBudget")
    assert set(deployments) == set(services) == set(budgets) == set(SERVICES)
    for name, deployment in deployments.items():
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selectors = (
            deployment["spec"]["selector"]["matchLabels"],
            services[name]["spec"]["selector"],
            budgets[name]["spec"]["selector"]["matchLabels"],
        )
        for selector in selectors:
            assert selector.items() <= pod_labels.items(), name
        others = [d for n, d in deployments.items() if n != name]
        for other in others:  # each selects its own pods only
            assert (
                not selectors[0].items() <= other["spec"]["template"]["metadata"]["labels"].items()
            )
        assert budgets[name]["spec"]["maxUnavailable"] == 1
        assert container(objects, name)["command"] == ["python", "-m", name]
        if name != "ingest":  # ingest's count is the autoscaler's in production
            assert deployment["spec"]["replicas"] == 3, name


def test_production_autoscales_ingest_on_cpu() -> None:
    objects = render((PRODUCTION,))
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler").values()
    ingest = of_kind(objects, "Deployment")["ingest"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", ingest["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] > 3
    assert "replicas" not in ingest["spec"], "a fixed count would fight the autoscaler"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert not of_kind(render(), "HorizontalPodAutoscaler"), "off by default"


def test_service_monitors_scrape_each_services_metrics_port() -> None:
    objects = render((PRODUCTION,))
    monitors = of_kind(objects, "ServiceMonitor")
    services = of_kind(objects, "Service")
    assert set(monitors) == set(SERVICES)
    for name, monitor in monitors.items():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(monitor["spec"]) <= SERVICE_MONITOR_SPEC
        selected = [
            s
            for s in services.values()
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert selected == [services[name]], f"{name}'s monitor selects {len(selected)} services"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT
        ports = {port["name"]: port for port in services[name]["spec"]["ports"]}
        assert ports[endpoint["port"]]["targetPort"] == "metrics"
        assert endpoint["path"] == "/metrics"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert not of_kind(render(), "ServiceMonitor"), "off by default (needs the operator's CRDs)"


def test_hooks_migrate_then_create_topics_before_the_services() -> None:
    objects = render()
    jobs = of_kind(objects, "Job")
    assert set(jobs) == {"migrate", "topics"}
    weights = {}
    for name, job in jobs.items():
        annotations = job["metadata"]["annotations"]
        assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
        weights[name] = int(annotations["helm.sh/hook-weight"])
        assert pod_specs(objects)[name]["restartPolicy"] == "Never"
        # the same code as docker-compose.yml's one-shot of that name
        assert container(objects, name)["command"] == command(name)
    assert weights["migrate"] < weights["topics"]
    for obj in objects:  # nothing else is a hook but the secret the jobs read
        hook = obj["metadata"].get("annotations", {}).get("helm.sh/hook")
        assert hook is None or obj["kind"] in ("Job", "Secret"), obj["metadata"]["name"]


def test_the_hooks_secret_exists_before_the_jobs_and_is_removed_after() -> None:
    """The chart's own Secret is created after the pre-install hooks: the Jobs read a copy
    made just before them (a lower weight) and deleted once they succeeded."""
    objects = render()
    secrets = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "Secret"}
    for name in ("migrate", "topics"):
        for entry in container(objects, name)["env"]:
            if "valueFrom" in entry:
                secret = secrets[entry["valueFrom"]["secretKeyRef"]["name"]]
                annotations = secret["metadata"]["annotations"]
                assert int(annotations["helm.sh/hook-weight"]) < 0
                assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
                assert entry["valueFrom"]["secretKeyRef"]["key"] in secret["data"]
    # with an existing Secret (created before the install), every object reads that one
    production = render((PRODUCTION,))
    assert not [obj for obj in production if obj["kind"] == "Secret"]
    for name in pod_specs(production):
        for entry in container(production, name).get("env", []):
            if "valueFrom" in entry:
                assert entry["valueFrom"]["secretKeyRef"]["name"] == "tenure-secrets"


def test_chart_version_matches_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]
    image = container(render(), "ingest")["image"]
    assert image.endswith(f":{project['version']}"), image


def test_release_name_prefixes_every_object() -> None:
    for obj in render():
        assert obj["metadata"]["name"].startswith(RELEASE), obj["metadata"]["name"]
        assert len(obj["metadata"]["name"]) <= 63
