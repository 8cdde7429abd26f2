from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings
from orchestrator.domain.playbook import SHIPPED


class OrchestratorSettings(ServiceSettings):
    """Environment variables ``TENURE_ORCHESTRATOR_*``."""

    model_config = SettingsConfigDict(
        env_prefix="TENURE_ORCHESTRATOR_", extra="ignore", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=1, le=65535)
    group_id: str = "tenure-orchestrator"
    playbooks_dir: Path = SHIPPED
    timer_poll_s: float = Field(default=0.25, gt=0, description="Real seconds between polls.")
    timer_batch: int = Field(default=100, ge=1)
    timer_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="Real seconds a replica holds the timers it claimed before others may.",
    )
    timer_max_attempts: int = Field(
        default=5, ge=1, description="Claims of a timer that fails before it is marked failed."
    )
    relay_poll_s: float = Field(default=0.1, gt=0)
    relay_batch: int = Field(default=500, ge=1)
