"""Playbooks as data: the YAML schema, validated when loaded (file, field and reason on error)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.datafiles import load_yaml

Channel = Literal["email", "in_app", "webhook"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScoreTrigger(_Strict):
    source: Literal["score"]
    churn_probability_above: float = Field(ge=0, le=1)


class DeliveryExit(_Strict):
    reason: str
    source: Literal["delivery"]
    statuses: tuple[str, ...] = Field(min_length=1)


class ScoreExit(_Strict):
    reason: str
    source: Literal["score"]
    churn_probability_below: float = Field(ge=0, le=1)


class Step(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    after: timedelta = Field(description="Offset from the moment the trigger fired (ISO 8601).")
    channel: Channel
    template: str
    recipient: Literal["customer", "csm", "escalation"] = "customer"
    priority: Literal["normal", "high"] = "normal"
    marketing: bool = Field(default=True, description="Marketing steps need consent.")

    @model_validator(mode="after")
    def _recipient_fits_channel(self) -> Step:
        if self.channel == "webhook" and self.recipient == "customer":
            raise ValueError("a webhook step goes to csm or escalation, not the customer")
        if self.channel != "webhook" and self.recipient != "customer":
            raise ValueError(f"a {self.channel} step goes to the customer")
        return self


class Playbook(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    lane: Literal["retention", "expansion", "lifecycle"]
    priority: int = 0
    goal: str
    cooldown: timedelta = timedelta(days=30)
    trigger: ScoreTrigger
    exits: tuple[DeliveryExit | ScoreExit, ...] = ()
    variants: tuple[str, ...] = ()
    steps: tuple[Step, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _steps_ordered_and_unique(self) -> Playbook:
        ids = [s.id for s in self.steps]
        if len(set(ids)) != len(ids):
            raise ValueError(f"step ids must be unique: {ids}")
        offsets = [s.after for s in self.steps]
        if offsets != sorted(offsets):
            raise ValueError("steps must be listed in the order of their offsets")
        return self

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(f"{self.name} has no step {step_id!r}")

    def is_last(self, step_id: str) -> bool:
        return self.steps[-1].id == step_id


class PlaybookError(Exception):
    """A playbook file is invalid."""


def load_playbook(path: Path) -> Playbook:
    """Read and validate one playbook file; :class:`PlaybookError` names file, field and reason."""
    return load_yaml(path, Playbook, PlaybookError)


def load_playbooks(folder: Path) -> dict[str, Playbook]:
    """Every ``*.yaml`` playbook of ``folder``, by name."""
    books = [load_playbook(p) for p in sorted(folder.glob("*.yaml"))]
    by_name = {b.name: b for b in books}
    if len(by_name) != len(books):
        raise PlaybookError(f"{folder}: two playbooks share a name")
    return by_name


SHIPPED = Path(__file__).parent.parent / "playbooks"
