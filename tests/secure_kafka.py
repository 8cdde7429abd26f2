"""A Kafka broker with TLS and SASL/SCRAM listeners, and a throwaway CA made for the test.

The broker is the harness's own (``devstack.kafka.KafkaBroker``, the same jars) with two
more listeners: ``SSL`` (mutual TLS) and ``SASL_SSL`` (SCRAM-SHA-512). Its certificate
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


@dataclass
class SecureKafka:
    """The running broker and the files a client needs (CA, client certificate and key)."""

    broker: KafkaBroker
    tls: BrokerTls
    files: Path

    @classmethod
    def start(cls, root: Path, libs: Path) -> SecureKafka:
        files = root / "tls"
        files.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("tenure-client")
        ca.cert_pem.write_to_path(str(files / "ca.pem"))
        client.cert_chain_pems[0].write_to_path(str(files / "client.pem"))
        (files / "client.key").write_text(pkcs8(client.private_key_pem.bytes()))
        # a CA that signed nothing of this broker's: "an unknown CA"
        trustme.CA().cert_pem.write_to_path(str(files / "other-ca.pem"))
        tls = BrokerTls(
            cert_chain_pem="".join(pem.bytes().decode() for pem in server.cert_chain_pems),
            key_pem=pkcs8(server.private_key_pem.bytes()),
            ca_pem=ca.cert_pem.bytes().decode(),
            ssl_port=free_port(),
            sasl_ssl_port=free_port(),
            scram_users=((USER, PASSWORD),),
        )
        broker = KafkaBroker(
            libs=libs,
            home=root / "kafka",
            port=free_port(),
            controller_port=free_port(),
            heap="384m",
            tls=tls,
        )
        broker.start()
        return cls(broker=broker, tls=tls, files=files)

    def stop(self) -> None:
        self.broker.stop()

    def settings(self, protocol: str = "SASL_SSL", **overrides: Any) -> CommonSettings:
        """Client settings for the listener of ``protocol`` (SASL_SSL, SSL, PLAINTEXT)."""
        options: dict[str, Any] = {"kafka_security_protocol": protocol}
        if protocol == "SASL_SSL":
            options |= {
                "kafka_bootstrap": f"127.0.0.1:{self.tls.sasl_ssl_port}",
                "kafka_sasl_mechanism": "SCRAM-SHA-512",
                "kafka_sasl_username": USER,
                "kafka_sasl_password": PASSWORD,
                "kafka_ssl_cafile": self.files / "ca.pem",
            }
        elif protocol == "SSL":
            options |= {
                "kafka_bootstrap": f"127.0.0.1:{self.tls.ssl_port}",
                "kafka_ssl_cafile": self.files / "ca.pem",
                "kafka_ssl_certfile": self.files / "client.pem",
                "kafka_ssl_keyfile": self.files / "client.key",
            }
        else:
            options["kafka_bootstrap"] = self.broker.bootstrap
        return CommonSettings(**{**options, **overrides})

    def env(self, protocol: str = "SASL_SSL", **overrides: Any) -> dict[str, str]:
        """The same settings as the ``TENURE_*`` variables a service process reads."""
        settings = self.settings(protocol, **overrides)
        names = [
            "kafka_bootstrap",
            "kafka_security_protocol",
            "kafka_sasl_mechanism",
            "kafka_sasl_username",
            "kafka_sasl_password",
            "kafka_ssl_cafile",
            "kafka_ssl_certfile",
            "kafka_ssl_keyfile",
        ]
        env = {}
        for name in names:
            value = getattr(settings, name)
            if value is None:
                continue
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            env[f"TENURE_{name.upper()}"] = str(value)
        return env
