"""Rendering deploy/helm/tenure with Helm, and reading what it rendered (for the chart tests).

Helm is built by ``make helm`` into .stack/helm (``make test`` builds it first); where it
was never built (``make test-unit`` on a fresh machine) the chart tests skip.
"""

from __future__ import annotations

import base64
import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "tenure"
MINIMAL = CHART / "ci" / "minimal-values.yaml"
PRODUCTION = CHART / "values-production.yaml"
SERVICES = ("ingest", "scoring", "orchestrator", "notifier")
RELEASE = "tenure"

# libpq's variables, which asyncpg reads when the URL does not say (PostgreSQL TLS).
LIBPQ_VARS = frozenset({"PGSSLMODE", "PGSSLROOTCERT"})


def helm_binary() -> str:
    built = ROOT / ".stack" / "helm" / "helm"
    found = str(built) if built.exists() else shutil.which("helm")
    if found is None:
        pytest.skip("Helm is not built: `make helm` (make test builds it)")
    return found


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def template_args(values: tuple[Path, ...], sets: tuple[str, ...]) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", "tenure"]
    for path in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    return args


@functools.cache
def render(values: tuple[Path, ...] = (MINIMAL,), sets: tuple[str, ...] = ()) -> list[Any]:
    """The objects ``helm template`` renders with these values files and ``--set``s."""
    result = helm(*template_args(values, sets))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_error(values: tuple[Path, ...] = (MINIMAL,), sets: tuple[str, ...] = ()) -> str:
    """What ``helm template`` says when it refuses these values (the test fails if it
    renders them)."""
    result = helm(*template_args(values, sets))
    assert result.returncode != 0, f"rendered although {sets} should be refused"
    return result.stderr


def of_kind(objects: list[Any], kind: str) -> dict[str, Any]:
    """Objects of a kind by their component label (ingest, migrate, ...) or name."""
    found = {}
    for obj in objects:
        if obj["kind"] == kind:
            labels = obj["metadata"].get("labels", {})
            found[labels.get("app.kubernetes.io/component", obj["metadata"]["name"])] = obj
    return found


def pod_specs(objects: list[Any]) -> dict[str, dict[str, Any]]:
    """The pod spec of every Deployment and Job, by component."""
    specs = {}
    for kind in ("Deployment", "Job"):
        for component, obj in of_kind(objects, kind).items():
            specs[component] = obj["spec"]["template"]["spec"]
    return specs


def container(objects: list[Any], component: str) -> dict[str, Any]:
    (only,) = pod_specs(objects)[component]["containers"]
    return only


def env_entries(objects: list[Any], component: str) -> list[dict[str, Any]]:
    return list(container(objects, component).get("env", []))


def resolve_env(
    objects: list[Any], component: str, existing: dict[str, dict[str, str]] | None = None
) -> dict[str, str]:
    """The container's environment as the kubelet would make it: plain values, and the
    keys of the rendered Secrets or of ``existing`` ones (name -> key -> value); a missing
    optional key leaves its variable unset, a missing required one fails the test."""
    secrets = {
        obj["metadata"]["name"]: {
            key: base64.b64decode(value).decode() for key, value in obj.get("data", {}).items()
        }
        for obj in objects
        if obj["kind"] == "Secret"
    }
    secrets.update(existing or {})
    env: dict[str, str] = {}
    for entry in env_entries(objects, component):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        data = secrets.get(ref["name"], {})
        if ref["key"] in data:
            env[entry["name"]] = data[ref["key"]]
        else:
            assert ref.get("optional"), f"{component}: {entry['name']} needs {ref}, missing"
    return env


def mounted_file(objects: list[Any], component: str, path: str) -> tuple[str, str]:
    """(kind of volume source, its name: Secret or ConfigMap) and the key a file path in
    the container comes from; fails the test if no volume mounted there provides it."""
    spec = pod_specs(objects)[component]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    for mount in container(objects, component).get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        volume = volumes[mount["name"]]
        for source in ("secret", "configMap"):
            if source in volume:
                items = {item["path"]: item["key"] for item in volume[source].get("items", [])}
                relative = path[len(prefix) :]
                name = volume[source].get("secretName") or volume[source].get("name")
                return f"{source}:{name}", items.get(relative, relative)
    raise AssertionError(f"{component}: nothing mounted provides {path}")


def values_file(tmp_path: Path, name: str, values: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def value_sets(tmp_path: Path) -> dict[str, tuple[Path, ...]]:
    """The values the chart is validated with: the least, the production example, and
    the least plus every optional part turned on (mutual TLS, model, playbooks, ...)."""
    everything = values_file(
        tmp_path,
        "everything.yaml",
        {
            "kafka": {
                "securityProtocol": "SSL",
                "tls": {"existingSecret": "kafka-tls", "certKey": "tls.crt", "keyKey": "tls.key"},
            },
            "postgresql": {"sslmode": "verify-ca", "ca": {"existingSecret": "pg-ca"}},
            "secrets": {
                "smtpPassword": "smtp-password",
                "inboundSecret": "an-inbound-secret-of-some-length",
                "inboxSecret": "an-inbox-secret",
                "ingestApiKey": "a-static-key",
                "linkPreviousSecrets": ["an-older-link-secret"],
            },
            "scoring": {"model": (ROOT / "services/scoring/model.yaml").read_text()},
            "orchestrator": {"playbooks": {"win_back.yaml": "name: win_back\n"}},
            "notifier": {
                "replyDomain": "reply.example.com",
                "smtp": {"username": "tenure"},
                "webhooks": {"allowHosts": ["10.0.0.0/8"], "slackTargets": ["escalation"]},
                "ingress": {"enabled": True},
            },
            "ingest": {
                "ingress": {"enabled": True, "host": "events.example.com"},
                "env": {"TENURE_INGEST_WORKERS": "4", "TENURE_LOG_LEVEL": "DEBUG"},
            },
            "env": {"TENURE_PRODUCER_REQUEST_TIMEOUT_MS": "20000", "TENURE_LOG_LEVEL": "WARNING"},
            "serviceMonitor": {"enabled": True},
            "serviceAccountName": "tenure",
            "imagePullSecrets": [{"name": "registry"}],
        },
    )
    return {
        "minimal": (MINIMAL,),
        "production": (PRODUCTION,),
        "everything": (MINIMAL, everything),
    }
