"""Configuration as data: YAML files validated by a pydantic model when loaded."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: Path, model: type[M], error: type[Exception]) -> M:
    """Read ``path`` and validate it as ``model``.

    Raises ``error`` with the file, the dotted path of each bad field and the reason,
    e.g. ``playbooks/x.yaml: steps.0.channel: Input should be 'email', ...``.
    """
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{path}: cannot read: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise error(f"{path}: {problems}") from exc
