from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    """Environment variables ``TENURE_INGEST_*``."""

    model_config = SettingsConfigDict(env_prefix="TENURE_INGEST_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    api_key: SecretStr = Field(description="The key product backends send (X-API-Key or Bearer).")
    api_key_id: str = Field(default="default", description="Id recorded with each event.")
    publish_timeout_s: float = Field(default=5.0, gt=0, le=60)
    retry_after_s: int = Field(default=5, ge=1, le=600)
    max_body_bytes: int = Field(default=65_536, ge=1024)
