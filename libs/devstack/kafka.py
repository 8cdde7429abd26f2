"""A single-node Apache Kafka broker in KRaft mode, run from the jars `make kafka` fetched."""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devstack.procs import require_free, spawn, stop, wait_for_port

LOG4J = """\
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
"""

# The garbage collector settings of Kafka's own start script (kafka-run-class.sh,
# KAFKA_JVM_PERFORMANCE_OPTS), and one of ours (MaxTenuringThreshold). Without a pause
# goal G1 aims at 200 ms and lets the young generation grow to most of the heap: under
# ingest's transactions at 500/s its young collections stopped the broker for 25-63 ms
# every ~10 s, each one a burst of slow answers.
JVM_PERFORMANCE = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    # Promote what survives one young collection. The broker's long-lived objects were
    # copied from survivor space to survivor space up to 15 times: 7 MB a collection, 17 ms
    # of object copying in its pause under ingest's load on two cores; with this, 1.6 MB
    # and 5 ms (the whole pause: 12-25 ms before, 13-17 ms after).
    "-XX:MaxTenuringThreshold=1",
    "-Djava.awt.headless=true",
)


@dataclass(frozen=True)
class BrokerTls:
    """What a broker needs for two more listeners beside PLAINTEXT: ``SSL`` on
    ``ssl_port`` (mutual TLS: a client must present a certificate ``ca_pem`` signed) and
    ``SASL_SSL`` on ``sasl_ssl_port`` (TLS, and a SCRAM-SHA-512 login of ``scram_users``,
    name -> password, created when the log directory is formatted). The broker's
    certificate (``cert_chain_pem``, naming 127.0.0.1) and key (``key_pem``, unencrypted
    PKCS#8) are PEM text, written into the broker's configuration. With
    ``sasl_plaintext_port``, a ``SASL_PLAINTEXT`` listener too (the same SCRAM logins,
    no TLS)."""

    cert_chain_pem: str
    key_pem: str
    ca_pem: str
    ssl_port: int
    sasl_ssl_port: int
    scram_users: tuple[tuple[str, str], ...] = ()
    sasl_plaintext_port: int | None = None

    def properties(self) -> list[str]:
        def inline(pem: str) -> str:  # one property value over several lines
            return " \\\n".join(line for line in pem.strip().splitlines())

        return [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.certificate.chain={inline(self.cert_chain_pem)}",
            f"ssl.keystore.key={inline(self.key_pem)}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.certificates={inline(self.ca_pem)}",
            "listener.name.ssl.ssl.client.auth=required",
            *(
                line
                for listener in self.sasl_listeners()
                for line in (
                    f"listener.name.{listener}.sasl.enabled.mechanisms=SCRAM-SHA-512",
                    f"listener.name.{listener}.scram-sha-512.sasl.jaas.config="
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                )
            ),
        ]

    def sasl_listeners(self) -> list[str]:
        return ["sasl_ssl"] + (["sasl_plaintext"] if self.sasl_plaintext_port else [])


@dataclass
class KafkaBroker:
    """One broker+controller on 127.0.0.1; its log directory is formatted once and kept."""

    libs: Path
    home: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    # server.properties lines that override the ones above them (the last of two keys
    # wins): a node of a cluster (devstack.cluster) sets its id, the quorum's voters and
    # the replication factors with them.
    overrides: tuple[str, ...] = ()
    jvm_options: tuple[str, ...] = ()  # more JVM flags, e.g. -Xlog:gc for a probe
    tls: BrokerTls | None = None  # SSL and SASL_SSL listeners too
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def _classpath(self) -> str:
        if not any(self.libs.glob("kafka_2.13-*.jar")):
            raise FileNotFoundError(f"no Kafka jars in {self.libs}: run `make kafka` first")
        return f"{self.libs}/*"

    def _listeners(self) -> dict[str, int]:
        listeners = {"PLAINTEXT": self.port}
        if self.tls is not None:
            listeners |= {"SSL": self.tls.ssl_port, "SASL_SSL": self.tls.sasl_ssl_port}
            if self.tls.sasl_plaintext_port is not None:
                listeners["SASL_PLAINTEXT"] = self.tls.sasl_plaintext_port
        return listeners

    def _write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        listeners = self._listeners()
        advertised = ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items())
        protocols = ",".join(f"{name}:{name}" for name in listeners)
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners={advertised},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners={advertised}",
                    "controller.listener.names=CONTROLLER",
                    f"listener.security.protocol.map={protocols},CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    "num.partitions=3",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=5",
                    "group.initial.rebalance.delay.ms=0",
                    *self.overrides,
                    "log.retention.hours=168",
                    # The log cleaner stays on: faust changelogs and `scores` are compacted.
                    "log.cleaner.enable=true",
                    *(self.tls.properties() if self.tls is not None else []),
                    "",
                ]
            )
        )
        (self.home / "log4j.properties").write_text(LOG4J)
        return config

    def _java(self, *args: str) -> list[str]:
        java = shutil.which("java") or "java"
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            *JVM_PERFORMANCE,
            *self.jvm_options,
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            "-cp",
            self._classpath(),
            *args,
        ]

    def format_once(self) -> None:
        """Format the KRaft log directory unless it already is."""
        config = self._write_config()
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = subprocess.run(
            self._java("kafka.tools.StorageTool", "random-uuid"),
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        scram = [
            arg
            for name, password in (self.tls.scram_users if self.tls is not None else ())
            for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
        ]
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *scram
            ),
            check=True,
            capture_output=True,
        )

    def start(self, *, timeout: float = 60.0) -> None:
        """Start the broker and block until it accepts connections."""
        require_free(*self._listeners().values(), self.controller_port, what="Kafka broker")
        self.format_once()
        self.proc = spawn(
            self._java("kafka.Kafka", str(self.home / "server.properties")),
            log_path=self.home / "broker.log",
        )
        for port in self._listeners().values():
            wait_for_port(port, timeout=timeout, proc=self.proc, what="Kafka broker")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is not None:
            stop(self.proc, timeout=20.0, sig=signal.SIGKILL if kill else signal.SIGTERM)
            self.proc = None

    # -- a node of a cluster (devstack.cluster) ---------------------------------------

    def format_for(self, cluster_id: str) -> None:
        """Format the KRaft log directory for the cluster ``cluster_id`` (every node of a
        cluster has the same) unless it already is."""
        config = self._write_config()
        if (self.data_dir / "meta.properties").exists():
            return
        subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)),
            check=True,
            capture_output=True,
        )

    def launch(self) -> None:
        """Start the broker without waiting: the nodes of a cluster start together (a
        node's broker listens only once the controllers have a quorum). Then
        :meth:`wait_until_listening`."""
        require_free(self.port, self.controller_port, what="Kafka broker")
        self.format_once()
        self.proc = spawn(
            self._java("kafka.Kafka", str(self.home / "server.properties")),
            log_path=self.home / "broker.log",
        )

    def wait_until_listening(self, *, timeout: float = 90.0) -> None:
        wait_for_port(self.port, timeout=timeout, proc=self.proc, what="Kafka broker")
