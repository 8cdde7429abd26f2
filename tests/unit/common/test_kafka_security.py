"""The Kafka security settings: validation naming the variables, the one option builder
(``client_options``), and the topic configuration ``ensure_topics`` creates."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from pydantic import ValidationError

from common.kafka import KafkaSecurityError, client_options, topic_configs
from common.settings import CommonSettings
from common.topics import Topic
from tests.secure_kafka import pkcs8

SASL = {
    "TENURE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "TENURE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "TENURE_KAFKA_SASL_USERNAME": "tenure",
    "TENURE_KAFKA_SASL_PASSWORD": "s3cret",
}


@pytest.fixture
def pems(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    client = ca.issue_cert("tenure-client")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    (tmp_path / "client.key").write_text(pkcs8(client.private_key_pem.bytes()))
    return {name: tmp_path / f"{name}" for name in ("ca.pem", "client.pem", "client.key")}


def settings_from(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> CommonSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return CommonSettings()


def refusal(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> str:
    with pytest.raises(ValidationError) as caught:
        settings_from(monkeypatch, env)
    return str(caught.value)


def test_plaintext_is_the_default_with_no_security_options() -> None:
    assert client_options(CommonSettings(kafka_bootstrap="k:9092")) == {
        "bootstrap_servers": "k:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_gives_a_verifying_context_and_the_login(
    monkeypatch: pytest.MonkeyPatch, pems: dict[str, Path]
) -> None:
    settings = settings_from(monkeypatch, {**SASL, "TENURE_KAFKA_SSL_CAFILE": str(pems["ca.pem"])})
    options = client_options(settings)
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # the CA file's, not the system's
    assert options == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "tenure",
        "sasl_plain_password": "s3cret",
    }
    assert "s3cret" not in repr(settings)  # a SecretStr


def test_sasl_plaintext_has_no_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        monkeypatch, {**SASL, "TENURE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    )
    options = client_options(settings)
    assert "ssl_context" not in options and options["sasl_mechanism"] == "SCRAM-SHA-512"


def test_mutual_tls_loads_the_client_certificate(
    monkeypatch: pytest.MonkeyPatch, pems: dict[str, Path]
) -> None:
    settings = settings_from(
        monkeypatch,
        {
            "TENURE_KAFKA_SECURITY_PROTOCOL": "SSL",
            "TENURE_KAFKA_SSL_CAFILE": str(pems["ca.pem"]),
            "TENURE_KAFKA_SSL_CERTFILE": str(pems["client.pem"]),
            "TENURE_KAFKA_SSL_KEYFILE": str(pems["client.key"]),
        },
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    # a key that is not the certificate's is refused when the options are built
    other = trustme.CA().issue_cert("someone-else")
    pems["client.key"].write_text(pkcs8(other.private_key_pem.bytes()))
    with pytest.raises(
        KafkaSecurityError, match=r"TENURE_KAFKA_SSL_CERTFILE .* TENURE_KAFKA_SSL_KEYFILE"
    ):
        client_options(settings)


def test_a_missing_or_unreadable_ca_file_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = settings_from(
        monkeypatch, {**SASL, "TENURE_KAFKA_SSL_CAFILE": str(tmp_path / "no.pem")}
    )
    with pytest.raises(KafkaSecurityError, match=r"^TENURE_KAFKA_SSL_CAFILE: no such file"):
        client_options(settings)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    junk = settings.model_copy(update={"kafka_ssl_cafile": tmp_path / "junk.pem"})
    with pytest.raises(KafkaSecurityError, match=r"^TENURE_KAFKA_SSL_CAFILE .* no usable PEM"):
        client_options(junk)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TENURE_KAFKA_SASL_MECHANISM": "PLAIN"}, "TENURE_KAFKA_SASL_MECHANISM set but"),
        ({"TENURE_KAFKA_SASL_USERNAME": "u"}, "TENURE_KAFKA_SASL_USERNAME set but"),
        ({"TENURE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "TENURE_KAFKA_SASL_MECHANISM, "),
        (
            {**SASL, "TENURE_KAFKA_SASL_PASSWORD": ""},
            "TENURE_KAFKA_SASL_PASSWORD required: TENURE_KAFKA_SECURITY_PROTOCOL is SASL_SSL",
        ),
        ({"TENURE_KAFKA_SSL_CAFILE": "/ca.pem"}, "TENURE_KAFKA_SSL_CAFILE set but"),
        (
            {"TENURE_KAFKA_SECURITY_PROTOCOL": "SSL", "TENURE_KAFKA_SSL_CERTFILE": "/c.pem"},
            "TENURE_KAFKA_SSL_CERTFILE and TENURE_KAFKA_SSL_KEYFILE go together",
        ),
        (
            {"TENURE_KAFKA_SECURITY_PROTOCOL": "SSL", "TENURE_KAFKA_SSL_KEYFILE": "/k.pem"},
            "TENURE_KAFKA_SSL_CERTFILE and TENURE_KAFKA_SSL_KEYFILE go together",
        ),
        (
            {"TENURE_TOPIC_REPLICATION_FACTOR": "2", "TENURE_TOPIC_MIN_INSYNC_REPLICAS": "3"},
            "TENURE_TOPIC_MIN_INSYNC_REPLICAS (3) must be at most TENURE_TOPIC_REPLICATION_FACTOR",
        ),
    ],
)
def test_inconsistent_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    assert named in refusal(monkeypatch, env)


def test_unknown_protocol_or_mechanism_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "kafka_security_protocol" in refusal(
        monkeypatch, {"TENURE_KAFKA_SECURITY_PROTOCOL": "TLS"}
    )
    monkeypatch.delenv("TENURE_KAFKA_SECURITY_PROTOCOL")
    assert "kafka_sasl_mechanism" in refusal(
        monkeypatch, {**SASL, "TENURE_KAFKA_SASL_MECHANISM": "GSSAPI"}
    )


def test_topic_configs_by_class() -> None:
    settings = CommonSettings(
        topic_replication_factor=3,
        topic_min_insync_replicas=2,
        topic_retention_events_ms=1000,
        topic_retention_signals_ms=2000,
        topic_retention_deliveries_ms=3000,
        topic_retention_notifications_ms=-1,
    )
    expected = {
        Topic.EVENTS_USAGE: "1000",
        Topic.EVENTS_INTENT: "1000",
        Topic.SIGNALS: "2000",
        Topic.ERASURES: "2000",
        Topic.DELIVERIES: "3000",
        Topic.NOTIFICATIONS: "-1",
    }
    for topic, retention in expected.items():
        assert topic_configs(settings, topic) == {
            "min.insync.replicas": "2",
            "cleanup.policy": "delete",
            "retention.ms": retention,
        }
        assert topic_configs(settings, topic, dlq=True)["retention.ms"] == retention
    assert topic_configs(settings, Topic.SCORES) == {
        "min.insync.replicas": "2",
        "cleanup.policy": "compact",
    }
    scores_dlq = topic_configs(settings, Topic.SCORES, dlq=True)
    assert scores_dlq["cleanup.policy"] == "delete" and scores_dlq["retention.ms"] == "2000"
