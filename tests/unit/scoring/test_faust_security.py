"""The scoring worker's faust app connects as every other client: the security settings
become faust's documented broker_credentials, which faust's aiokafka driver turns into
the same options ``common.kafka.client_options`` gives the other clients."""

from __future__ import annotations

from pathlib import Path

import faust
import trustme
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from common.kafka import client_options
from common.settings import CommonSettings
from scoring.adapters.faust_app import Tables, make_app
from scoring.adapters.faust_security import broker_credentials
from scoring.settings import ScoringSettings
from tests.secure_kafka import pkcs8


def without_context(options: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in options.items() if k not in ("ssl_context", "bootstrap_servers")}


def test_plaintext_has_no_credentials() -> None:
    assert broker_credentials(CommonSettings()) is None


def test_sasl_ssl_becomes_sasl_credentials_with_the_same_options(tmp_path: Path) -> None:
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    common = CommonSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="tenure",
        kafka_sasl_password="pw",
        kafka_ssl_cafile=tmp_path / "ca.pem",
    )
    credentials = broker_credentials(common)
    assert isinstance(credentials, faust.SASLCredentials)
    faust_options = dict(credentials_to_aiokafka_auth(credentials))
    assert faust_options["ssl_context"] is not None
    assert without_context(faust_options) == without_context(client_options(common))
    assert faust_options["security_protocol"] == "SASL_SSL"


def test_mutual_tls_becomes_ssl_credentials(tmp_path: Path) -> None:
    ca = trustme.CA()
    client = ca.issue_cert("tenure-client")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    (tmp_path / "c.key").write_text(pkcs8(client.private_key_pem.bytes()))
    common = CommonSettings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tmp_path / "ca.pem",
        kafka_ssl_certfile=tmp_path / "c.pem",
        kafka_ssl_keyfile=tmp_path / "c.key",
    )
    credentials = broker_credentials(common)
    assert isinstance(credentials, faust.SSLCredentials)
    assert dict(credentials_to_aiokafka_auth(credentials))["security_protocol"] == "SSL"


def test_the_app_is_built_with_them(tmp_path: Path) -> None:
    common = CommonSettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="tenure",
        kafka_sasl_password="pw",
    )
    app = make_app(ScoringSettings(common=common, data_dir=tmp_path))
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "tenure" and credentials.mechanism.value == "SCRAM-SHA-512"


def test_the_topics_faust_creates_get_the_replication_factor(tmp_path: Path) -> None:
    common = CommonSettings(topic_replication_factor=3, topic_min_insync_replicas=2)
    app = make_app(ScoringSettings(common=common, data_dir=tmp_path))
    assert app.conf.topic_replication_factor == 3


def test_the_changelogs_faust_creates_get_min_insync_replicas(tmp_path: Path) -> None:
    """The tables' changelog topics are declared with the settings' min.insync.replicas
    (faust's documented ``extra_topic_configs``); tests/cluster/test_consumers_broker_loss.py
    reads it back from the topic the worker created on the three-broker cluster."""
    common = CommonSettings(topic_replication_factor=3, topic_min_insync_replicas=2)
    settings = ScoringSettings(common=common, data_dir=tmp_path)
    tables = Tables(make_app(settings), settings)
    for table in (tables.states, tables.cohorts):
        assert table.changelog_topic.config == {"min.insync.replicas": "2"}
