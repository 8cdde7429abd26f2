"""A Kafka broker with TLS and SASL/SCRAM listeners, and a throwaway CA made for the test.

The broker is the harness's own (``devstack.kafka.KafkaBroker``, the same jars) with two
more listeners: ``SSL`` (mutual TLS), ``SASL_SSL`` and ``SASL_PLAINTEXT`` (SCRAM-SHA-512,
with and without TLS). Its certificate
and the client's are issued by a CA that ``trustme`` makes when the broker starts, and
written with the settings' files into the broker's folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from cryptography.hazmat.primitives import serialization

from common.settings import CommonSettings
from devstack.kafka import BrokerTls, KafkaBroker
from devstack.procs import free_port

USER = "tenure"
PASSWORD = "tenure-scram-secret"


def pkcs8(key_pem: bytes) -> str:
    """The key as unencrypted PKCS#8 PEM (what Kafka's PEM key store reads)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass(frozen=True)
class TlsMaterial:
    """A throwaway CA's files for the clients, and what the broker needs (its listeners'
    ports, certificate and SCRAM user)."""

    files: Path
    tls: BrokerTls

    @classmethod
    def make(cls, folder: Path) -> TlsMaterial:
        folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("tenure-client")
        ca.cert_pem.write_to_path(str(folder / "ca.pem"))
        client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
        (folder / "client.key").write_text(pkcs8(client.private_key_pem.bytes()))
        # a CA that signed nothing of this broker's: "an unknown CA"
        trustme.CA().cert_pem.write_to_path(str(folder / "other-ca.pem"))
        tls = BrokerTls(
            cert_chain_pem="".join(pem.bytes().decode() for pem in server.cert_chain_pems),
            key_pem=pkcs8(server.private_key_pem.bytes()),
            ca_pem=ca.cert_pem.bytes().decode(),
            ssl_port=free_port(),
            sasl_ssl_port=free_port(),
            scram_users=((USER, PASSWORD),),
            sasl_plaintext_port=free_port(),
        )
        return cls(folder, tls)

    def client(self, protocol: str = "SASL_SSL") -> dict[str, Any]:
        """CommonSettings fields to connect to the listener of ``protocol`` (SASL_SSL,
        SASL_PLAINTEXT or SSL); the PLAINTEXT listener needs none but the broker's
        bootstrap."""
        if protocol == "SASL_PLAINTEXT":
            assert self.tls.sasl_plaintext_port is not None
            return {
                "kafka_bootstrap": f"127.0.0.1:{self.tls.sasl_plaintext_port}",
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "SCRAM-SHA-512",
                "kafka_sasl_username": USER,
                "kafka_sasl_password": PASSWORD,
            }
        if protocol == "SASL_SSL":
            return {
                "kafka_bootstrap": f"127.0.0.1:{self.tls.sasl_ssl_port}",
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "SCRAM-SHA-512",
                "kafka_sasl_username": USER,
                "kafka_sasl_password": PASSWORD,
                "kafka_ssl_cafile": self.files / "ca.pem",
            }
        if protocol == "SSL":
            return {
                "kafka_bootstrap": f"127.0.0.1:{self.tls.ssl_port}",
                "kafka_security_protocol": "SSL",
                "kafka_ssl_cafile": self.files / "ca.pem",
                "kafka_ssl_certfile": self.files / "client.pem",
                "kafka_ssl_keyfile": self.files / "client.key",
            }
        return {"kafka_security_protocol": "PLAINTEXT"}


@dataclass
class SecureKafka:
    """A running broker with SSL and SASL_SSL listeners, and the CA's files."""

    broker: KafkaBroker
    material: TlsMaterial

    @classmethod
    def start(cls, root: Path, libs: Path) -> SecureKafka:
        material = TlsMaterial.make(root / "tls")
        broker = KafkaBroker(
            libs=libs,
            home=root / "kafka",
            port=free_port(),
            controller_port=free_port(),
            heap="384m",
            tls=material.tls,
        )
        broker.start()
        return cls(broker, material)

    def stop(self) -> None:
        self.broker.stop()

    @property
    def files(self) -> Path:
        return self.material.files

    def settings(self, protocol: str = "SASL_SSL", **overrides: Any) -> CommonSettings:
        """Client settings for the listener of ``protocol`` (SASL_SSL, SASL_PLAINTEXT, SSL,
        PLAINTEXT)."""
        options = {"kafka_bootstrap": self.broker.bootstrap, **self.material.client(protocol)}
        return CommonSettings(**{**options, **overrides})
