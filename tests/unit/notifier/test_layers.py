"""The notifier's layers: one error base class, a service layer free of I/O libraries,
and HTTP status codes picked by the API alone."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from notifier.errors import NotifierError

NOTIFIER = Path(__file__).resolve().parents[3] / "services" / "notifier"
MODULES = sorted(NOTIFIER.rglob("*.py"))
IO_LIBRARIES = {"aiosmtplib", "httpx", "httpcore", "sqlalchemy", "asyncpg", "aiokafka"}
HTTP_FRAMEWORKS = {"fastapi", "starlette", "sse_starlette", "uvicorn"}
# The API (api.py and the inbound route's helpers) is the one place with status codes.
API = {NOTIFIER / "entrypoints" / "api.py", NOTIFIER / "entrypoints" / "inbound.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(NOTIFIER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def exception_classes(path: Path) -> list[type[BaseException]]:
    """The exception classes ``path`` defines (not those it imports)."""
    module = importlib.import_module(module_name(path))
    names = [n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)]
    found = [getattr(module, name, None) for name in names]
    return [c for c in found if isinstance(c, type) and issubclass(c, BaseException)]


def test_every_exception_of_the_notifier_derives_from_notifier_error() -> None:
    defined = [c for path in MODULES for c in exception_classes(path)]
    assert len(defined) >= 9  # the base, the send errors, Suppressed, the domain's
    assert [c.__qualname__ for c in defined if not issubclass(c, NotifierError)] == []


@pytest.mark.parametrize(
    "path",
    sorted((NOTIFIER / "service_layer").glob("*.py")),
    ids=lambda p: p.name,
)
def test_the_service_layer_imports_no_io_library(path: Path) -> None:
    assert not imported_roots(path) & (IO_LIBRARIES | HTTP_FRAMEWORKS)


def test_only_the_api_imports_the_http_framework() -> None:
    offenders = [
        str(p.relative_to(NOTIFIER))
        for p in MODULES
        if p not in API and imported_roots(p) & HTTP_FRAMEWORKS
    ]
    assert offenders == []
