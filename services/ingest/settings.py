from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import HttpServiceSettings


class IngestSettings(HttpServiceSettings):
    """Environment variables ``TENURE_INGEST_*``."""

    model_config = SettingsConfigDict(env_prefix="TENURE_INGEST_", extra="ignore", frozen=True)

    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="Worker processes (uvicorn).")
    api_key: SecretStr | None = Field(
        default=None,
        description="An optional static key with scope events:write (local stack, tests); "
        "real keys are made with `tenure keys create` and live in PostgreSQL.",
    )
    keys_from_database: bool = Field(
        default=True, description="Load the keys made with `tenure keys` from PostgreSQL."
    )
    database_pool_size: int = Field(
        default=2,
        ge=1,
        le=200,
        description="PostgreSQL connections at most: ingest reads only API keys (and caches "
        "them), so two are enough.",
    )
    keys_refresh_s: float = Field(
        default=30.0, gt=0, le=60, description="A revoked key stops working within this time."
    )
    keys_miss_reload_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="A key ingest does not know makes it reload the keys, at most once this "
        "often whatever the number of unknown keys presented: a key just created works on "
        "its first request.",
    )
    publish_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="Longest wait for Kafka's acknowledgement."
    )
    transaction_timeout_s: float = Field(
        default=10.0,
        ge=1,
        le=900,
        description="Kafka aborts a transaction left open this long (a crashed ingest's).",
    )
    commit_reserve_s: float = Field(
        default=1.0,
        gt=0,
        description="Part of publish_timeout_s kept for the commit: records not "
        "acknowledged before publish_timeout_s - commit_reserve_s are aborted.",
    )
    transaction_producers: int = Field(
        default=4,
        ge=1,
        le=32,
        description="Transactional producers taking turns: one transaction at a time each, "
        "so more of them overlap one group's commit with the next groups' sends.",
    )
    transaction_spacing_ms: float = Field(
        default=5.0,
        ge=0,
        le=1000,
        description="Transactions begin at least this far apart, whichever producer takes "
        "the next group: the producers' commits then stay out of step, so one is free to "
        "take waiting events every this many ms.",
    )
    max_transaction_events: int = Field(
        default=5_000, ge=1, description="Most events committed in one group transaction."
    )
    gc_freeze: bool = Field(
        default=True,
        description="Once started, move every object alive then (modules, the app, its "
        "schemas: ~120,000) out of the garbage collector's reach (gc.freeze), so that a full "
        "collection walks only what the requests left behind, not all of them.",
    )
    retry_after_s: int = Field(default=5, ge=1, le=600)
    max_inflight_events: int = Field(
        default=20_000, ge=1, description="Events awaiting acknowledgement before 503."
    )
    max_event_bytes: int = Field(default=65_536, ge=1024, description="Body of POST /v1/events.")
    max_batch_bytes: int = Field(default=524_288, ge=1024, description="Body of POST /v1/batch.")
    max_batch_events: int = Field(default=500, ge=1, le=10_000)
    max_future_skew: timedelta = Field(
        default=timedelta(minutes=5), description="How far ahead of the clock occurred_at may be."
    )
    max_event_age: timedelta = Field(
        default=timedelta(days=30), description="How old occurred_at may be."
    )
    rate_per_key: float = Field(default=2_000, gt=0, description="Events a second per API key.")
    burst_per_key: float = Field(default=10_000, gt=0, description="Token bucket size.")

    @model_validator(mode="after")
    def _reserve_fits(self) -> IngestSettings:
        if self.commit_reserve_s >= self.publish_timeout_s:
            raise ValueError("commit_reserve_s must be smaller than publish_timeout_s")
        return self
