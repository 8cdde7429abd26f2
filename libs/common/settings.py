"""Settings shared by every service.

Every setting is an environment variable prefixed ``TENURE_``; a service's own
settings class uses ``TENURE_<SERVICE>_``. Settings are validated when the
object is built, at start-up: a bad value stops the process with the variable
named. Nothing else in the code base reads ``os.environ``.
"""

from __future__ import annotations

from datetime import UTC, datetime

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
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|text)$")

    @field_validator("clock_epoch", mode="before")
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
