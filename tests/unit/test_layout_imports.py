"""Which way the imports point, and how long a file may grow (issue 14).

``libs/`` is shared by every service, so it imports none of them, nor the ``tenure``
command that sits above them all (``cli/``); the services do not import the command
either. Lazy imports inside functions count: they are dependencies all the same.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 500

# Every package under services/ and cli/ (a folder with an __init__.py).
SERVICES = sorted(p.parent.name for p in ROOT.glob("services/*/__init__.py"))
COMMAND = sorted(p.parent.name for p in ROOT.glob("cli/*/__init__.py"))


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import in ``path``, wherever it is written."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def offenders(paths: list[Path], forbidden: list[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in paths
        for line, module in imports(path)
        if module.split(".")[0] in forbidden
    ]


def test_the_packages_are_found() -> None:
    assert {"ingest", "scoring", "orchestrator", "notifier"} <= set(SERVICES)
    assert COMMAND == ["tenure_cli"]


def test_libs_import_no_service_and_not_the_command() -> None:
    found = offenders(sources("libs"), SERVICES + COMMAND)
    assert found == [], "libs/ must not depend on a service:\n" + "\n".join(found)


def test_services_do_not_import_the_command() -> None:
    found = offenders(sources("services"), COMMAND)
    assert found == [], "services/ must not depend on cli/:\n" + "\n".join(found)


def line_counts() -> dict[str, int]:
    """Lines of every file under services/ and libs/common/ (code, templates, YAML)."""
    return {
        str(p.relative_to(ROOT)): len(p.read_bytes().splitlines())
        for folder in ("services", "libs/common")
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_no_file_is_over_500_lines() -> None:
    long = {name: lines for name, lines in line_counts().items() if lines > MAX_LINES}
    assert long == {}, "split these files:\n" + "\n".join(
        f"{name}: {lines} lines" for name, lines in sorted(long.items())
    )
