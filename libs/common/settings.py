"""Settings shared by every service.

Every setting is an environment variable prefixed ``TENURE_``; a service's own
settings class uses ``TENURE_<SERVICE>_``. Settings are validated when the
object is built, at start-up: a bad value stops the process with the variable
named. Nothing else in the code base reads ``os.environ``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TenureSettings(BaseSettings):
    """Base class for every settings class: env only, unknown variables ignored."""

    model_config = SettingsConfigDict(env_prefix="TENURE_", extra="ignore", frozen=True)


class CommonSettings(TenureSettings):
    """What every service needs: where Kafka and PostgreSQL are, and what time it is."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How every Kafka client connects: TLS (SSL, SASL_SSL) and/or SASL "
        "authentication (SASL_PLAINTEXT, SASL_SSL).",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="Required with a SASL_* protocol, refused without one."
    )
    kafka_sasl_username: str | None = Field(
        default=None, description="Required with a SASL_* protocol, refused without one."
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="Required with a SASL_* protocol, refused without one."
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed the brokers' certificates (SSL, "
        "SASL_SSL). None: the system's CAs.",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None,
        description="The client's certificate (PEM) for mutual TLS; with kafka_ssl_keyfile.",
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="The client certificate's private key (PEM, unencrypted)."
    )
    topic_prefix: str = "tenure."
    topic_partitions: int = Field(default=3, ge=1, le=1000)
    topic_replication_factor: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Replicas of every topic ensure_topics creates (production: 3).",
    )
    topic_min_insync_replicas: int = Field(
        default=1,
        ge=1,
        le=32,
        description="min.insync.replicas of every topic ensure_topics creates (production: "
        "2): with acks=all a write needs this many replicas; at most the replication factor.",
    )
    topic_retention_events_ms: int = Field(
        default=7 * 24 * 3_600_000,
        ge=-1,
        description="retention.ms of the events.* topics (and of every DLQ); -1 keeps forever.",
    )
    topic_retention_signals_ms: int = Field(
        default=7 * 24 * 3_600_000, ge=-1, description="retention.ms of signals and erasures."
    )
    topic_retention_deliveries_ms: int = Field(
        default=7 * 24 * 3_600_000, ge=-1, description="retention.ms of deliveries."
    )
    topic_retention_notifications_ms: int = Field(
        default=7 * 24 * 3_600_000, ge=-1, description="retention.ms of notifications."
    )
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/tenure"
    time_scale: float = Field(
        default=1.0,
        gt=0,
        description="How many simulated seconds pass per real second (1440 = a day a minute).",
    )
    clock_epoch: datetime | None = Field(
        default=None,
        description="Real instant from which the scaled clock runs faster; every process of "
        "one deployment must share it. Defaults to the process start.",
    )
    producer_linger_ms: int = Field(
        default=2, ge=0, le=1000, description="How long a producer waits to fill a batch."
    )
    producer_request_timeout_ms: int = Field(
        default=15_000, ge=1000, description="Longest wait for one produce request's answer."
    )
    metrics_every_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="How often the stall gauges are measured: consumer lag, due timers, the "
        "outbox and retry backlogs, live journeys (one Kafka or SQL round trip each time).",
    )
    build_commit: str = Field(
        default="unknown",
        description="The commit this build came from (the image sets it), shown by every "
        "service's tenure_<service>_build_info; read when the metrics are declared.",
    )
    log_level: str = "INFO"
    log_format: Literal["json", "text"] | None = Field(
        default=None,
        description="json (one object a line, for files and collectors) or text (for a "
        "person); unset: text when stderr is a terminal, json otherwise.",
    )

    @field_validator(
        "clock_epoch",
        "log_format",
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _kafka_security_is_consistent(self) -> Self:
        problem = kafka_security_problem(self)
        if problem is not None:
            raise ValueError(problem)
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                f"TENURE_TOPIC_MIN_INSYNC_REPLICAS ({self.topic_min_insync_replicas}) must be "
                f"at most TENURE_TOPIC_REPLICATION_FACTOR ({self.topic_replication_factor}): "
                "no write with acks=all could succeed"
            )
        return self

    @field_validator("clock_epoch")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def kafka_security_problem(settings: CommonSettings) -> str | None:
    """What is inconsistent in the Kafka security settings, naming the variables; None if
    nothing is. SASL settings need a SASL_* protocol and vice versa; TLS files need SSL or
    SASL_SSL; a client certificate needs its key and the key its certificate."""
    protocol = settings.kafka_security_protocol
    where = f"TENURE_KAFKA_SECURITY_PROTOCOL is {protocol}"
    sasl = {
        "TENURE_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "TENURE_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "TENURE_KAFKA_SASL_PASSWORD": settings.kafka_sasl_password,
    }
    if protocol.startswith("SASL_"):
        missing = [name for name, value in sasl.items() if value is None]
        if missing:
            return f"{', '.join(missing)} required: {where}"
    else:
        given = [name for name, value in sasl.items() if value is not None]
        if given:
            return f"{', '.join(given)} set but {where} (SASL needs SASL_PLAINTEXT or SASL_SSL)"
    files = {
        "TENURE_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "TENURE_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "TENURE_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    if protocol not in ("SSL", "SASL_SSL"):
        given = [name for name, value in files.items() if value is not None]
        if given:
            return f"{', '.join(given)} set but {where} (TLS needs SSL or SASL_SSL)"
    if (settings.kafka_ssl_certfile is None) != (settings.kafka_ssl_keyfile is None):
        return (
            "TENURE_KAFKA_SSL_CERTFILE and TENURE_KAFKA_SSL_KEYFILE go together (mutual TLS): "
            "set both or neither"
        )
    return None


class ServiceSettings(TenureSettings):
    """Base for a service's settings: its own fields plus the common ones under ``common``."""

    common: CommonSettings = Field(default_factory=CommonSettings)


class HttpServiceSettings(ServiceSettings):
    """Base for a service with an HTTP API: how it serves, under the service's prefix.

    Defaults suit development; in production turn ``docs`` off and consider a
    ``metrics_port`` that only Prometheus can reach.
    """

    host: str = Field(default="127.0.0.1", description="The address the API listens on.")
    database_pool_size: int = Field(
        default=10,
        ge=1,
        le=200,
        description="PostgreSQL connections this process keeps open at most (SQLAlchemy's "
        "pool_size). Replicas x this, for every service, must stay under the server's "
        "max_connections (docs/operations.md).",
    )
    docs: bool = Field(
        default=True,
        description="Serve the API's documentation (/docs, /redoc, /openapi.json). Turn it "
        "off in production: it lists every route and parameter to anyone who reaches the port.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve /metrics on this port instead of the API's, on a listener of its "
        "own that only Prometheus needs to reach. None: /metrics is on the API port.",
    )
    metrics_host: str | None = Field(
        default=None,
        description="The address of that metrics listener (e.g. an internal interface); "
        "None: the API's host.",
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="A connection must send a whole request head (request line and headers) "
        "within this long of opening, or of the first byte of a later request; else it is "
        "closed. Bounds clients that send a request slowly to hold a connection (slowloris).",
    )
    http_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A request's body must have arrived within this long of its head; else "
        "the connection is closed (the request, if being handled, sees a disconnect).",
    )
    http_keep_alive_s: int = Field(
        default=5, ge=1, le=300, description="An idle kept-alive connection is closed after this."
    )
    http_max_connections: int = Field(
        default=1024,
        ge=1,
        le=100_000,
        description="Open connections per worker process (each inbox stream holds one); one "
        "more is answered 503 and closed as soon as it is accepted.",
    )
    http_max_header_bytes: int = Field(
        default=32_768,
        ge=1024,
        le=1_048_576,
        description="The longest request head (request line and headers) taken; a longer one "
        "is answered 431 and its connection closed.",
    )

    @property
    def served_metrics_host(self) -> str:
        """Where the metrics listener binds: ``metrics_host``, else the API's ``host``."""
        return self.metrics_host or self.host
