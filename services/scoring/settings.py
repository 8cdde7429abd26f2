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
    store: str = Field(
        default="rocksdb://",
        pattern="^rocksdb://$",
        description="faust's table store: RocksDB (the worker writes a batch's states to it "
        "in write batches; see scoring.adapters.faust_app).",
    )
    rocksdb_block_cache_mb: int = Field(default=64, ge=8)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9102, ge=1, le=65535)
    read_committed: bool = Field(
        default=True, description="Consume only committed records (ingest writes transactionally)."
    )
    ticks_topic: str = Field(
        default="scoring.ticks", description="Internal topic (prefixed) of clock re-evaluations."
    )
    sweep_interval_s: float = Field(
        default=1.0, gt=0, description="Real seconds between two clock sweeps of local customers."
    )
    session_timeout_s: float = Field(
        default=60.0,
        ge=6,
        le=300,
        description="How long the group waits for a silent worker before giving its partitions "
        "to another (a SIGKILLed worker's partitions move after this).",
    )
    sweep_min_age_s: float = Field(
        default=3600.0,
        ge=0,
        description="Simulated seconds since a customer's last evaluation before the sweep "
        "looks at it again (events re-evaluate it anyway).",
    )
    producer_linger_ms: int = Field(
        default=50,
        ge=0,
        le=1000,
        description="How long the worker's producer gathers records into one request: the "
        "worker yields between events, so a short linger meant a request per event or two.",
    )
    metadata_max_age_ms: int = Field(
        default=5_000, ge=500, description="How often the consumer refreshes topic metadata."
    )
    cohorts_topic: str = Field(
        default="scoring.cohorts",
        description="Internal topic (prefixed) of plan-cohort deltas, keyed by plan.",
    )
    cohort_stats_topic: str = Field(
        default="scoring.cohort-stats",
        description="Internal compacted topic (prefixed) of each plan's pooled cohort counts.",
    )
    sweep_batch: int = Field(
        default=500, ge=1, description="Customers re-evaluated per sweep at most (bounded work)."
    )
    batch_max_events: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Most events an agent handles per iteration: the first its stream hands "
        "it and those already waiting behind it (1 is one event at a time, as faust does).",
    )
    batch_within_ms: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="When nothing waits behind an agent's first event, how long to wait once "
        "for more before handling it: up to this much latency to coalesce a trickle; 0 never "
        "waits (a batch is what has already arrived).",
    )
