"""``tenure playbooks``: check playbook files before they are deployed.

``tenure playbooks validate PATH`` loads a playbook file, or every ``*.yaml`` of a
folder, with the same validation the orchestrator runs at start-up. Each invalid
file is reported on one line with the file, the path of the field and the reason;
the exit status is 0 when everything is valid and 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.domain.playbook import (
    EventTrigger,
    Playbook,
    PlaybookError,
    ScoreTrigger,
    SignalTrigger,
    load_playbook,
    load_playbooks,
)


def register_playbooks(parser: argparse.ArgumentParser) -> None:
    """Validate playbook files (YAML) as the orchestrator loads them."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = actions.add_parser(
        "validate", help="validate one playbook file, or every *.yaml of a folder"
    )
    validate.add_argument("path", metavar="PATH", type=Path)
    validate.set_defaults(run=playbooks_validate)


def _summary(book: Playbook) -> str:
    trigger = book.trigger
    if isinstance(trigger, SignalTrigger):
        what = f"signal {'|'.join(trigger.signals)}"
        if trigger.held:
            what += f" held {trigger.held.days}d"
    elif isinstance(trigger, EventTrigger):
        what = f"event {'|'.join(trigger.types)}"
    elif isinstance(trigger, ScoreTrigger):
        what = f"score {trigger.field} > {trigger.above}"
    else:
        what = f"journey {trigger.playbook} ended {'|'.join(trigger.reasons)}"
    days = ", ".join(f"{s.id} +{s.after.days}d" for s in book.steps)
    return f"{book.name} ({book.lane}, trigger: {what}; {days})"


def playbooks_validate(args: argparse.Namespace) -> int:
    path: Path = args.path
    if path.is_dir():
        files = sorted(path.glob("*.yaml"))
        if not files:
            return _fail([f"{path}: no playbook files (*.yaml)"])
    elif path.is_file():
        files = [path]
    else:
        return _fail([f"{path}: no such file or folder"])
    errors: list[str] = []
    books: dict[Path, Playbook] = {}
    for file in files:
        try:
            books[file] = load_playbook(file)
        except PlaybookError as exc:
            errors.append(str(exc))
    if not errors and path.is_dir():
        try:  # the checks across files: unique names, triggers naming existing playbooks
            load_playbooks(path)
        except PlaybookError as exc:
            errors.append(str(exc))
    for file, book in books.items():
        if not any(str(file) in e for e in errors):
            sys.stdout.write(f"ok    {file}: {_summary(book)}\n")
    return _fail(errors) if errors else 0


def _fail(errors: list[str]) -> int:
    for error in errors:
        one_line = " ".join(error.split())  # a YAML syntax error spans several lines
        sys.stderr.write(f"tenure: invalid playbook: {one_line}\n")
    return 1
