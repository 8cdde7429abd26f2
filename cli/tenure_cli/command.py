"""``tenure``: one subcommand per entry of :data:`COMMANDS`, each from its owner's ``cli.py``.

Each owner keeps its own subcommands: ``keys`` and ``dlq`` in :mod:`common.cli`, ``templates`` and
``inbox`` in :mod:`notifier.cli`, ``playbooks``, ``customers``, ``analytics`` and
``report`` in :mod:`orchestrator.cli`; ``playbooks`` and ``templates`` are given the check
that joins the two (:mod:`tenure_cli.offers`: playbook offers against templates). A
register function adds its arguments to the parser it is given and sets ``run``
(namespace -> exit status) on every leaf parser; the first line of its docstring is the
subcommand's help. A new subcommand is one more entry
in :data:`COMMANDS`.

A problem the user can fix (:class:`common.cli.CliError`, or a ``ValueError`` raised
before any I/O) exits with status 1 and one line on stderr, never a traceback; an
option value that breaks its rule (:class:`common.cli.UsageError`) with status 2 and one
line naming the option; a malformed command line with status 2 and argparse's usage
message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from common.cli import CliError, register_dlq, register_keys
from notifier.cli import register_inbox
from orchestrator.cli import register_analytics, register_customers, register_report
from tenure_cli.offers import register_playbooks, register_templates

Register = Callable[[argparse.ArgumentParser], None]

COMMANDS: dict[str, Register] = {
    "analytics": register_analytics,
    "customers": register_customers,
    "dlq": register_dlq,
    "inbox": register_inbox,
    "keys": register_keys,
    "playbooks": register_playbooks,
    "report": register_report,
    "templates": register_templates,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tenure", description="Tenure operator tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, register in COMMANDS.items():
        summary = (register.__doc__ or "").strip().splitlines()[0]
        register(commands.add_parser(name, help=summary, description=summary))
    return parser


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tenure`` with ``argv`` (default: the process arguments); the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except CliError as exc:
        sys.stderr.write(f"tenure: error: {_one_line(exc)}\n")
        return exc.exit_status
    except ValueError as exc:
        sys.stderr.write(f"tenure: error: {_one_line(exc)}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last resort: still one line, never a traceback
        sys.stderr.write(f"tenure: error: unexpected {type(exc).__name__}: {_one_line(exc)}\n")
        return 1
    return status
