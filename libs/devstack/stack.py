"""The whole local system: infrastructure plus the four services, as one object.

``make run`` and the test harness both use :class:`Stack`; only the ports, the folder
and the clock speed differ.

The simulated clock is kept with the data: :meth:`Stack.stop` (and ``make run`` every
second) writes the simulated instant reached to ``<root>/clock.json``, and a stack made
on a folder holding one resumes its clock from that instant. Without it, a restarted
``make run`` went back to the real date while the timers of the previous run, weeks
ahead in simulated time, stayed in PostgreSQL and fired during the new run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from common.clock import ScaledClock
from common.db import upgrade
from common.kafka import ensure_topics
from common.logging import LogFormat, json_to_text
from common.settings import CommonSettings
from devstack import prometheus
from devstack.kafka import BrokerTls, KafkaBroker
from devstack.postgres import EmbeddedPostgres
from devstack.procs import free_port, require_free, spawn, stop, stop_all, wait_for_port

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "scoring", "orchestrator", "notifier")
CLOCK_FILE = "clock.json"
# The variable of each service's listening port (a replica gets a port of its own).
_PORT_VARIABLES = {
    "ingest": "TENURE_INGEST_PORT",
    "scoring": "TENURE_SCORING_METRICS_PORT",
    "orchestrator": "TENURE_ORCHESTRATOR_PORT",
    "notifier": "TENURE_NOTIFIER_PORT",
}


def resuming_epoch(reached: datetime, scale: float, now: datetime) -> datetime:
    """The epoch whose scaled clock (``scale``) shows ``reached`` at the real instant ``now``.

    Simulated = epoch + (real - epoch) x scale; solved for the epoch. At scale 1 the
    simulated time is the real time whatever the epoch: ``now`` is returned.
    """
    if scale == 1:
        return now
    seconds = (now.timestamp() * scale - reached.timestamp()) / (scale - 1)
    return datetime.fromtimestamp(seconds, UTC)


def read_clock(root: Path) -> datetime | None:
    """The simulated instant a previous run on ``root`` reached, if it left one."""
    try:
        saved = json.loads((root / CLOCK_FILE).read_text())
        return datetime.fromisoformat(saved["reached"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{root / CLOCK_FILE}: unreadable ({exc}); delete it to start afresh"
        ) from exc


@dataclass(frozen=True)
class Ports:
    kafka: int = 9092
    controller: int = 9093
    smtp: int = 2525
    webhooks: int = 8090
    ingest: int = 8080
    orchestrator: int = 8081
    notifier: int = 8082
    scoring_metrics: int = 9102
    prometheus: int = 9090

    @classmethod
    def free(cls) -> Ports:
        return cls(**{name: free_port() for name in cls.__dataclass_fields__})


@dataclass
class Stack:
    root: Path
    ports: Ports = field(default_factory=Ports)
    time_scale: float = 1440.0
    topic_prefix: str = "tenure."
    partitions: int = 3
    api_key: str = "tenure-dev-key"
    database_url: str | None = None
    kafka_libs: Path = REPO / ".stack" / "kafka" / "libs"
    # SSL and SASL_SSL listeners on the broker, and how every client connects (fields of
    # CommonSettings: kafka_bootstrap, kafka_security_protocol, kafka_sasl_*, kafka_ssl_*);
    # empty: PLAINTEXT on the broker's first listener.
    kafka_tls: BrokerTls | None = None
    kafka_client: dict[str, Any] = field(default_factory=dict)
    echo: IO[str] | None = None
    # How the services' lines are shown on ``echo``; ``.stack/logs`` keeps their JSON.
    echo_format: LogFormat = "json"
    # Real instant from which the scaled clock runs; None: resume the clock saved in
    # ``root`` (see the module's docstring), or start it now if there is none.
    epoch: datetime = field(default=None)  # type: ignore[assignment]
    # How old an event ingest admits (TENURE_INGEST_MAX_EVENT_AGE); None: its default.
    # `make run` widens it to the simulator's history (devstack.history.span).
    ingest_max_event_age: timedelta | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # (service, replica) -> the port of a second (third...) copy, chosen when first started
    replica_ports: dict[tuple[str, int], int] = field(default_factory=dict)
    resumed_from: datetime | None = field(default=None, init=False)
    _pg: EmbeddedPostgres | None = None
    _kafka: KafkaBroker | None = None

    def __post_init__(self) -> None:
        if self.epoch is None:
            now = datetime.now(UTC)
            self.resumed_from = read_clock(self.root)
            self.epoch = (
                now
                if self.resumed_from is None
                else resuming_epoch(self.resumed_from, self.time_scale, now)
            )

    # -- the simulated clock -------------------------------------------------------
    def clock(self) -> ScaledClock:
        """The clock every process of this stack shares."""
        return ScaledClock(scale=self.time_scale, epoch=self.epoch)

    def save_clock(self) -> None:
        """Write the simulated instant reached to ``<root>/clock.json`` (atomically)."""
        if not self.root.is_dir():
            return
        path = self.root / CLOCK_FILE
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps({"reached": self.clock().now().isoformat()}) + "\n")
        os.replace(partial, path)

    # -- infrastructure ------------------------------------------------------------
    @property
    def kafka(self) -> KafkaBroker:
        if self._kafka is None:
            self._kafka = KafkaBroker(
                libs=self.kafka_libs,
                home=self.root / "kafka",
                port=self.ports.kafka,
                controller_port=self.ports.controller,
                tls=self.kafka_tls,
            )
        return self._kafka

    @property
    def mail_dir(self) -> Path:
        return self.root / "mail"

    @property
    def webhook_dir(self) -> Path:
        return self.root / "webhooks"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def common_settings(self) -> CommonSettings:
        assert self.database_url is not None
        return CommonSettings(
            **{"kafka_bootstrap": self.kafka.bootstrap, **self.kafka_client},
            topic_prefix=self.topic_prefix,
            topic_partitions=self.partitions,
            database_url=self.database_url,
            time_scale=self.time_scale,
            clock_epoch=self.epoch,
        )

    def kafka_env(self) -> dict[str, str]:
        """The Kafka connection as the services' variables (``TENURE_KAFKA_*``)."""
        env = {"TENURE_KAFKA_BOOTSTRAP": self.kafka.bootstrap}
        for name, value in self.kafka_client.items():
            secret = getattr(value, "get_secret_value", None)
            env[f"TENURE_{name.upper()}"] = str(secret() if secret is not None else value)
        return env

    def start_kafka(self) -> None:
        self.kafka.start()

    def start_postgres(self) -> None:
        if self.database_url is None:
            self._pg = EmbeddedPostgres(self.root / "pg")
            self.database_url = self._pg.start()
        upgrade(self.database_url)

    def new_database(self, name: str, *, migrated: bool = True) -> str:
        """Create (or recreate) database ``name`` on this stack's server, migrated unless
        ``migrated`` is false (then empty); its URL."""
        assert self.database_url is not None
        url = make_url(self.database_url)

        async def create() -> None:
            engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
            async with engine.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
            await engine.dispose()

        asyncio.run(create())
        fresh = url.set(database=name).render_as_string(hide_password=False)
        if migrated:
            upgrade(fresh)
        return fresh

    def create_topics(self) -> None:
        asyncio.run(ensure_topics(self.common_settings()))

    def start_sinks(self) -> None:
        require_free(self.ports.smtp, self.ports.webhooks, what="mail and webhook sinks")
        self._spawn(
            "sinks",
            [
                "-m",
                "devstack",
                "sinks",
                "--mail-dir",
                str(self.mail_dir),
                "--smtp-port",
                str(self.ports.smtp),
                "--webhook-dir",
                str(self.webhook_dir),
                "--webhook-port",
                str(self.ports.webhooks),
            ],
        )
        wait_for_port(self.ports.smtp, timeout=20, proc=self.procs["sinks"], what="SMTP sink")
        wait_for_port(self.ports.webhooks, timeout=20, proc=self.procs["sinks"], what="webhooks")

    def start_infra(self) -> None:
        for folder in (self.root, self.mail_dir, self.webhook_dir, self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.start_kafka()
        self.start_postgres()
        self.create_topics()
        self.start_sinks()

    # -- services ------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Every variable the services read, for this stack."""
        assert self.database_url is not None
        p = self.ports
        return {
            "PYTHONUNBUFFERED": "1",
            "TENURE_LOG_FORMAT": "json",  # the files keep JSON; `echo` may show text
            **self.kafka_env(),
            "TENURE_TOPIC_PREFIX": self.topic_prefix,
            "TENURE_TOPIC_PARTITIONS": str(self.partitions),
            "TENURE_DATABASE_URL": self.database_url,
            "TENURE_TIME_SCALE": str(self.time_scale),
            "TENURE_CLOCK_EPOCH": self.epoch.isoformat(),
            "TENURE_INGEST_PORT": str(p.ingest),
            "TENURE_INGEST_API_KEY": self.api_key,
            "TENURE_SCORING_DATA_DIR": str(self.root / "scoring"),
            "TENURE_SCORING_METRICS_PORT": str(p.scoring_metrics),
            "TENURE_ORCHESTRATOR_PORT": str(p.orchestrator),
            "TENURE_NOTIFIER_PORT": str(p.notifier),
            "TENURE_NOTIFIER_PUBLIC_URL": f"http://127.0.0.1:{p.notifier}",
            # DEVELOPMENT ONLY: links over http on this machine. A deployment serves the
            # notifier over https (RFC 8058) and must not set this.
            "TENURE_NOTIFIER_ALLOW_HTTP_PUBLIC_URL": "true",
            "TENURE_NOTIFIER_SMTP_PORT": str(p.smtp),
            "TENURE_NOTIFIER_LINK_SECRET": "local-link-secret",
            "TENURE_NOTIFIER_WEBHOOK_SECRET": "whsec_"
            + base64.b64encode(b"local-webhook-key-0123456789abcdef").decode(),
            "TENURE_NOTIFIER_WEBHOOK_CSM_URL": f"http://127.0.0.1:{p.webhooks}/csm",
            "TENURE_NOTIFIER_WEBHOOK_ESCALATION_URL": f"http://127.0.0.1:{p.webhooks}/escalation",
            # The SSRF guard refuses loopback addresses: allow the stack's own receiver.
            "TENURE_NOTIFIER_WEBHOOK_ALLOW_HOSTS": f'["127.0.0.1:{p.webhooks}"]',
            "TENURE_SIMULATOR_INGEST_URL": f"http://127.0.0.1:{p.ingest}",
            "TENURE_SIMULATOR_API_KEY": self.api_key,
            "TENURE_SIMULATOR_MAIL_DIR": str(self.mail_dir),
            **(
                {"TENURE_INGEST_MAX_EVENT_AGE": f"P{self.ingest_max_event_age.days}D"}
                if self.ingest_max_event_age is not None
                else {}
            ),
        }

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log_path = self.log_dir / f"{name}.log"
        proc = spawn(
            [sys.executable, *args],
            env=env,
            cwd=REPO,
            pipe=self.echo is not None,
            log_path=None if self.echo is not None else log_path,
        )
        self.procs[name] = proc
        if self.echo is not None:
            threading.Thread(target=self._pump, args=(name, proc, log_path), daemon=True).start()

    def _pump(self, name: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        assert proc.stdout is not None and self.echo is not None
        with log_path.open("ab") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                shown = line.decode(errors="replace").rstrip()
                if self.echo_format == "text":
                    shown = json_to_text(shown)
                self.echo.write(f"{name:>12} | {shown}\n")
                self.echo.flush()

    def start_service(
        self, name: str, extra_env: dict[str, str] | None = None, *, replica: int = 0
    ) -> str:
        """Start service ``name``; the name of its process in :attr:`procs`.

        ``replica`` 0 is the stack's own copy, on the ports of :attr:`ports`; replica
        ``n`` > 0 is another copy of the same service (process ``<name>-<n>``) on a port
        of its own (kept across restarts) and, for scoring, a data folder of its own.
        """
        proc_name = name if replica == 0 else f"{name}-{replica}"
        port = self.service_ports().get(proc_name)
        if port is not None:
            require_free(port, what=proc_name)
        module = "devstack.simulator" if name == "simulator" else name
        env = {**self.env(), **self._replica_env(name, replica), **(extra_env or {})}
        self._spawn(proc_name, ["-m", module], env)
        return proc_name

    def _replica_env(self, name: str, replica: int) -> dict[str, str]:
        variable = _PORT_VARIABLES.get(name)
        if replica == 0 or variable is None:
            return {}
        port = self.replica_ports.setdefault((name, replica), free_port())
        env = {variable: str(port)}
        if name == "scoring":  # RocksDB: one process per folder
            env["TENURE_SCORING_DATA_DIR"] = str(self.root / f"scoring-{replica}")
        return env

    def service_ports(self) -> dict[str, int]:
        """Process name -> the port it listens on (HTTP, or scoring's metrics), replicas
        included."""
        p = self.ports
        return {
            "ingest": p.ingest,
            "orchestrator": p.orchestrator,
            "notifier": p.notifier,
            "scoring": p.scoring_metrics,
            **{f"{name}-{n}": port for (name, n), port in self.replica_ports.items()},
        }

    def wait_ready(self, timeout: float = 60.0) -> None:
        for name, port in self.service_ports().items():
            if name in self.procs:
                wait_for_port(port, timeout=timeout, proc=self.procs[name], what=name)

    def start_services(self, names: tuple[str, ...] = SERVICES) -> None:
        for name in names:
            self.start_service(name)
        self.wait_ready()

    def start_prometheus(self) -> bool:
        """Prometheus scraping the services, if `make prometheus` could fetch it."""
        if not prometheus.BINARY.exists():
            return False
        require_free(self.ports.prometheus, what="Prometheus")
        home = self.root / "prometheus"
        home.mkdir(parents=True, exist_ok=True)
        config = home / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus.local_config(self.service_ports())))
        argv = prometheus.command(config, home / "data", self.ports.prometheus)
        self.procs["prometheus"] = spawn(argv, log_path=self.log_dir / "prometheus.log", cwd=home)
        wait_for_port(self.ports.prometheus, timeout=30, proc=self.procs["prometheus"])
        return True

    def stop_service(self, name: str, *, kill: bool = False) -> None:
        import signal

        proc = self.procs.pop(name, None)
        if proc is not None:
            stop(proc, sig=signal.SIGKILL if kill else signal.SIGTERM)

    def stop_services(self, names: Iterable[str]) -> None:
        """Stop the processes ``names`` (those running) with SIGTERM, all at once: each
        has the grace of :meth:`stop_service`, and the stops overlap."""
        stop_all([p for n in names if (p := self.procs.pop(n, None)) is not None])

    def stop(self) -> None:
        """Stop everything this stack started, services first; keep the clock. Idempotent."""
        self.save_clock()
        infra = [n for n in ("prometheus", "sinks") if n in self.procs]
        self.stop_services([n for n in reversed(list(self.procs)) if n not in infra])
        self.stop_services(infra)
        if self._kafka is not None:
            self._kafka.stop()
        if self._pg is not None:
            self._pg.stop()
            self._pg = None

    def dead(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
