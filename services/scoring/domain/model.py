"""The scoring model file: its schema and loader. Invalid files fail with file, field and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.datafiles import load_yaml

Rule = Literal["count_above", "count_at_least", "latest_below", "invoice_late", "inactive"]
Source = Literal["nps", "survey", "comment_sentiment"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SignalSpec(_Strict):
    group: str
    weight: float = Field(gt=0)
    rule: Rule
    counter: str | None = None
    source: Source | None = None
    window_days: int | None = Field(default=None, ge=1, le=400)
    threshold: float | None = None

    @model_validator(mode="after")
    def _fields_for_rule(self) -> SignalSpec:
        need: dict[str, tuple[str, ...]] = {
            "count_above": ("counter", "window_days", "threshold"),
            "count_at_least": ("counter", "window_days", "threshold"),
            "latest_below": ("source", "threshold"),
            "invoice_late": ("threshold",),
            "inactive": (),
        }
        missing = [f for f in need[self.rule] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"rule {self.rule} needs {', '.join(missing)}")
        return self


class Tiers(_Strict):
    medium_from: int = Field(ge=1)
    high_from: int = Field(ge=2)


class Probability(_Strict):
    low: tuple[float, float]
    medium: tuple[float, float]
    high: tuple[float, float]


class RedFlagSpec(_Strict):
    name: str
    signals: tuple[str, ...]
    nps_below: float | None = None
    floor: float = Field(ge=0, le=1)


class SentimentBands(_Strict):
    negative_below: float = Field(ge=0, le=1)
    positive_above: float = Field(ge=0, le=1)


class ScoringModel(_Strict):
    version: int
    groups: dict[str, float]
    signals: dict[str, SignalSpec]
    tiers: Tiers
    probability: Probability
    red_flags: tuple[RedFlagSpec, ...] = ()
    sentiment: SentimentBands
    dedup_ids_per_customer: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> ScoringModel:
        if abs(sum(self.groups.values()) - 100) > 1e-9:
            raise ValueError(f"group weights must sum to 100, not {sum(self.groups.values())}")
        for name, spec in self.signals.items():
            if spec.group not in self.groups:
                raise ValueError(f"signals.{name}.group: unknown group {spec.group!r}")
        for flag in self.red_flags:
            unknown = [s for s in flag.signals if s not in self.signals]
            if unknown:
                raise ValueError(f"red flag {flag.name}: unknown signals {unknown}")
        return self

    def contribution(self, signal: str) -> float:
        """Points (of 100) a signal adds when active: group weight times its share of the group."""
        spec = self.signals[signal]
        group_total = sum(s.weight for s in self.signals.values() if s.group == spec.group)
        return self.groups[spec.group] * spec.weight / group_total

    @property
    def longest_window_days(self) -> int:
        return max((s.window_days or 0 for s in self.signals.values()), default=1)


class ModelError(Exception):
    """The scoring model file is invalid."""


def load_model(path: Path) -> ScoringModel:
    """Read and validate a model file. Raises :class:`ModelError` naming file, field and reason."""
    return load_yaml(path, ScoringModel, ModelError)


DEFAULT_MODEL_PATH = Path(__file__).parent.parent / "model.yaml"
