"""Settings shared by every service.

Every setting is an environment variable prefixed ``TENURE_``; a service's own
settings class uses ``TENURE_<SERVICE>_``. Settings are validated when the
object is built, at start-up: a bad value stops the process with the variable
named. Nothing else in the code base reads ``os.environ``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TenureSettings(BaseSettings):
    """Base class for every settings class: env only, unknown variables ignored."""

    model_config = SettingsConfigDict(env_prefix="TENURE_", extra="ignore", frozen=True)


class CommonSettings(TenureSettings):
    """What every service needs: where Kafka and PostgreSQL are, and what time it is."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "tenure."
    topic_partitions: int = Field(default=3, ge=1, le=1000)
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

    @field_validator("clock_epoch", "log_format", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("clock_epoch")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class ServiceSettings(TenureSettings):
    """Base for a service's settings: its own fields plus the common ones under ``common``."""

    common: CommonSettings = Field(default_factory=CommonSettings)


class HttpServiceSettings(ServiceSettings):
    """Base for a service with an HTTP API: how it serves, under the service's prefix.

    Defaults suit development; in production turn ``docs`` off and consider a
    ``metrics_port`` that only Prometheus can reach.
    """

    host: str = Field(default="127.0.0.1", description="The address the API listens on.")
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
