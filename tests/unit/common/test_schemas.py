import json
from pathlib import Path

from common.schemas import schemas

DOCS = Path(__file__).resolve().parents[3] / "docs" / "schemas"


def test_exported_schemas_are_up_to_date() -> None:
    """docs/schemas is what `make schemas` writes today: rerun it after changing a model."""
    for name, schema in schemas().items():
        exported = json.loads((DOCS / name).read_text())
        assert exported == json.loads(json.dumps(schema)), f"{name} is stale: run make schemas"


def test_every_kind_lists_its_types() -> None:
    support = schemas()["event.support.json"]
    assert support["properties"]["type"]["enum"] == [  # type: ignore[index]
        "ticket_opened",
        "ticket_closed",
        "nps_response",
        "survey_response",
        "comment",
    ]
