"""Export the JSON Schemas of events and messages for product teams: ``make schemas``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import TypeAdapter

from common.events import EVENT_MODELS, Event
from common.messages import Delivery, Notification, ScoreSnapshot, SignalChange


def schemas() -> dict[str, dict[str, object]]:
    """File name → JSON Schema, for every event kind, the event union and each message."""
    out: dict[str, dict[str, object]] = {
        f"event.{kind}.json": model.model_json_schema() for kind, model in EVENT_MODELS.items()
    }
    out["event.json"] = TypeAdapter(Event).json_schema()
    for model in (ScoreSnapshot, SignalChange, Notification, Delivery):
        out[f"message.{model.__name__}.json"] = model.model_json_schema()
    return out


def export(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = folder / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in export(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")):
        sys.stdout.write(f"{path}\n")
