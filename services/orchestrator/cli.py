"""``tenure playbooks``: check playbook files before they are deployed;
``tenure customers``: export a customer's data, erase a customer;
``tenure analytics``: rebuild the MRR movements from the payment events on Kafka.

``tenure playbooks validate PATH`` loads a playbook file, or every ``*.yaml`` of a
folder, with the same validation the orchestrator runs at start-up. Each invalid
file is reported on one line with the file, the path of the field and the reason;
the exit status is 0 when everything is valid and 1 otherwise. The ``tenure`` command
also checks each step against the notifier's templates (``--templates DIR``): a template
reading an ``offer`` field the step's ``offer`` block does not define is reported with
the playbook, the step and the field.

``tenure customers export ID`` prints everything Tenure keeps about a customer as one
JSON document (or writes it with ``--out``); ``tenure customers erase ID`` erases the
customer as ``DELETE /v1/customers/{id}`` does and prints the erasure record. Both talk
to PostgreSQL directly (``--database-url`` or ``TENURE_DATABASE_URL``).

``tenure analytics rebuild --since DATE`` reads ``events.payment`` from the offsets of
that time (UTC; a date or an ISO 8601 instant) to its end and records every event's MRR
movement and subscription state again, as the orchestrator's analytics consumer does
(idempotent); it prints what it read and recorded as JSON.

``tenure report --month 2026-11 --out report.html`` writes the portfolio's month as one
self-contained HTML page (figures, tables and charts; no external reference), from
PostgreSQL (``--database-url`` or ``TENURE_DATABASE_URL``) with the figures
``GET /v1/metrics/portfolio`` answers (``orchestrator.entrypoints.report``). A
``--month`` that is not ``YYYY-MM`` exits with status 2 and one line naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from common.cli import (
    CliError,
    UsageError,
    add_database_option,
    database_option,
    database_url,
    with_engine,
)
from common.clock import clock_from_settings
from common.db import create_engine
from common.kafka import broker_reachable
from common.outage import DatabaseUnavailable
from common.settings import CommonSettings
from orchestrator.domain import portfolio as P
from orchestrator.domain.playbook import (
    EventTrigger,
    Playbook,
    PlaybookError,
    ScoreTrigger,
    SignalTrigger,
    load_playbook,
    load_playbooks,
)
from orchestrator.entrypoints.analytics import rebuild
from orchestrator.entrypoints.deps import Deps
from orchestrator.service_layer.portfolio import at_risk_now, portfolio_figures
from orchestrator.service_layer.privacy import erase_customer, export_customer
from orchestrator.settings import OrchestratorSettings

StepCheck = Callable[[Playbook, Path | None], list[str]]
"""A check of a valid playbook against what the orchestrator does not own (the notifier's
templates, from the folder given, None for the shipped one): one line per problem,
naming the step. Given by the ``tenure`` command, which sits above both services."""


def register_playbooks(
    parser: argparse.ArgumentParser, step_check: StepCheck | None = None
) -> None:
    """Validate playbook files (YAML) as the orchestrator loads them."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = actions.add_parser(
        "validate", help="validate one playbook file, or every *.yaml of a folder"
    )
    validate.add_argument("path", metavar="PATH", type=Path)
    if step_check is not None:
        validate.add_argument(
            "--templates",
            type=Path,
            default=None,
            metavar="DIR",
            help="the notifier's template folder the steps are checked against "
            "(default: the shipped one)",
        )
    validate.set_defaults(run=lambda args: playbooks_validate(args, step_check))


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


def playbooks_validate(args: argparse.Namespace, step_check: StepCheck | None = None) -> int:
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
    if step_check is not None:
        for file, book in books.items():
            errors += [f"{file}: {problem}" for problem in step_check(book, args.templates)]
    for file, book in books.items():
        if not any(str(file) in e for e in errors):
            sys.stdout.write(f"ok    {file}: {_summary(book)}\n")
    return _fail(errors) if errors else 0


def _fail(errors: list[str]) -> int:
    for error in errors:
        one_line = " ".join(error.split())  # a YAML syntax error spans several lines
        sys.stderr.write(f"tenure: invalid playbook: {one_line}\n")
    return 1


def register_customers(parser: argparse.ArgumentParser) -> None:
    """Export a customer's data or erase a customer (GDPR access and erasure)."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export", parents=[database_option()], help="everything kept about a customer, as JSON"
    )
    export.add_argument("customer_id", metavar="ID")
    export.add_argument("--out", type=Path, metavar="FILE", help="write it here, not to stdout")
    export.set_defaults(run=customers_export)
    erase = actions.add_parser(
        "erase", parents=[database_option()], help="erase a customer everywhere Tenure keeps it"
    )
    erase.add_argument("customer_id", metavar="ID")
    erase.set_defaults(run=customers_erase)


def customers_export(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    clock = clock_from_settings(settings.time_scale, settings.clock_epoch)

    async def run(engine: AsyncEngine) -> dict[str, object] | None:
        return await export_customer(args.customer_id, engine=engine, clock=clock)

    document = with_engine(args, run)
    if document is None:
        raise CliError(f"nothing is kept about customer {args.customer_id!r}")
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    if args.out is not None:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def customers_erase(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    clock = clock_from_settings(settings.time_scale, settings.clock_epoch)
    who = f"cli:{getpass.getuser()}"

    async def run(engine: AsyncEngine) -> object:
        return await erase_customer(
            args.customer_id,
            engine=engine,
            clock=clock,
            topic_prefix=settings.topic_prefix,
            requested_by=who,
        )

    erased = with_engine(args, run)
    sys.stdout.write(orjson.dumps(vars(erased), option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stderr.write(
        "erased in PostgreSQL; scoring drops its state when the orchestrator's relay has "
        "published the erasure (seconds while the services run)\n"
    )
    return 0


def register_analytics(parser: argparse.ArgumentParser) -> None:
    """Rebuild the portfolio's MRR movements from the payment events on Kafka."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    again = actions.add_parser(
        "rebuild",
        parents=[database_option()],
        help="record the MRR movements of every payment event since a time again",
    )
    again.add_argument(
        "--since",
        required=True,
        type=instant,
        metavar="DATE",
        help="UTC date (2026-11-01) or ISO 8601 instant from which to read events.payment",
    )
    again.set_defaults(run=analytics_rebuild)


def instant(text: str) -> datetime:
    """``--since``: a date or an ISO 8601 instant, UTC when it names no offset."""
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date or ISO 8601 instant (e.g. 2026-11-01)"
        ) from None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def analytics_rebuild(args: argparse.Namespace) -> int:
    settings = OrchestratorSettings()
    common = settings.common
    url = database_url(args)

    async def run() -> dict[str, object]:
        if not await broker_reachable(common):
            raise CliError(f"Kafka unreachable at {common.kafka_bootstrap}")
        engine = create_engine(url, pool_size=1)
        try:
            deps = Deps(
                engine=engine,
                playbooks=load_playbooks(settings.playbooks_dir),
                clock=clock_from_settings(common.time_scale, common.clock_epoch),
                topic_prefix=common.topic_prefix,
                default_currency=settings.default_currency,
            )
            report = await rebuild(deps, common, args.since)
        except DatabaseUnavailable:
            where = engine.url.render_as_string(hide_password=True)
            raise CliError(f"database unreachable at {where}") from None
        finally:
            await engine.dispose()
        return {
            "since": args.since.isoformat(),
            "records": report.records,
            "invalid": report.invalid,
            "states": report.states,
            "movements": dict(sorted(report.movements.items())),
        }

    sys.stdout.write(orjson.dumps(asyncio.run(run()), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def register_report(parser: argparse.ArgumentParser) -> None:
    """Write a month's portfolio report: one self-contained HTML page with figures and charts."""
    parser.add_argument(
        "--month",
        required=True,
        metavar="YYYY-MM",
        help="the calendar month (UTC) to report on, e.g. 2026-11",
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="FILE", help="where to write the page"
    )
    add_database_option(parser)
    parser.set_defaults(run=report_write)


def report_write(args: argparse.Namespace) -> int:
    # Imported here: matplotlib takes a good part of a second, which no other command needs.
    from orchestrator.entrypoints.report.page import Report, render

    try:
        month = P.Month.parse(args.month)
    except ValueError as exc:
        raise UsageError(f"--month: {exc}") from None
    out: Path = args.out
    if not out.parent.is_dir():
        raise CliError(f"--out: no such folder {str(out.parent)!r}")
    settings = OrchestratorSettings()
    first = month.back(settings.report_history_months - 1)
    months = P.months(first, month, limit=settings.report_history_months)
    playbooks = load_playbooks(settings.playbooks_dir)

    async def read(engine: AsyncEngine) -> Report:
        figures = await portfolio_figures(
            engine, months, playbooks=playbooks, rules=settings.figure_rules()
        )
        return Report(
            figures=figures,
            at_risk=await at_risk_now(engine, settings.default_currency),
            confidence=settings.portfolio_confidence,
            generated_at=clock_from_settings(
                settings.common.time_scale, settings.common.clock_epoch
            ).now(),
        )

    page = render(with_engine(args, read))
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(out)
    sys.stdout.write(f"wrote {out} ({month}, {len(page.encode()):,} bytes)\n")
    return 0
