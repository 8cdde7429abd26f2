"""Ingest's layers: only ``ingest.api`` knows HTTP, and every error it can answer with
has a status code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ingest.api.errors import STATUS
from ingest.errors import IngestError

INGEST = Path(__file__).resolve().parents[3] / "services" / "ingest"
HTTP = {"fastapi", "starlette", "uvicorn", "httpx"}
# __main__.py starts uvicorn: the process entry point, not a layer.
BELOW_THE_API = sorted(
    p
    for p in INGEST.rglob("*.py")
    if "api" not in p.relative_to(INGEST).parts and p.name != "__main__.py"
)


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", BELOW_THE_API, ids=lambda p: str(p.relative_to(INGEST)))
def test_only_the_api_imports_http_libraries(path: Path) -> None:
    assert not imported_roots(path) & HTTP


def test_every_ingest_error_has_a_status_code() -> None:
    assert set(IngestError.__subclasses__()) == set(STATUS)
    assert len(BELOW_THE_API) >= 8
