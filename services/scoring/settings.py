from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings
from scoring.domain.model import DEFAULT_MODEL_PATH


class ScoringSettings(ServiceSettings):
    """Environment variables ``TENURE_SCORING_*``."""

    model_config = SettingsConfigDict(env_prefix="TENURE_SCORING_", extra="ignore", frozen=True)

    app_id: str = "tenure-scoring"
    model_path: Path = DEFAULT_MODEL_PATH
    data_dir: Path = Path(".stack/scoring")
    store: str = Field(default="rocksdb://", pattern="^(rocksdb|memory)://$")
    rocksdb_block_cache_mb: int = Field(default=64, ge=8)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9102, ge=1, le=65535)
