"""What every ``tenure`` subcommand shares, and common's own: ``tenure keys``.

The command itself is assembled in the ``tenure_cli`` package (``cli/tenure_cli``),
which imports each service's subcommands; this module imports no service, so the
services' ``cli.py`` modules can use it: :class:`CliError` (the command's one error
class, and :class:`UsageError` for a bad option value), :func:`database_option` and
:func:`with_engine`.

``tenure keys create|revoke|list`` manage API keys (see :mod:`common.apikeys`);
:func:`register_keys` adds them to a parser. ``tenure dlq list|replay`` show and replay
dead letters (see :mod:`common.kafka.dead_letters`); :func:`register_dlq`.

A problem the user can fix (unknown key id, bad scope, unreachable database) is raised
as :class:`CliError` (or ``ValueError``); ``tenure`` reports it with status 1 and one line
on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import ValidationError
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine

from common.apikeys import ApiKey, ApiKeyError, KeyRepository, Scope, generate
from common.db import create_engine
from common.kafka import (
    DeadLetter,
    InvalidRecord,
    NoSuchTopic,
    PublishError,
    read_dead_letters,
    replay_dead_letters,
)
from common.settings import CommonSettings
from common.topics import DLQ_SUFFIX, Topic, topic_name

T = TypeVar("T")

# How long a command waits for PostgreSQL before calling it unreachable.
DB_TIMEOUT_S = 15.0
# How long a ``tenure dlq`` command may take, Kafka's answers included.
KAFKA_TIMEOUT_S = 120.0


class CliError(Exception):
    """A problem the user can fix: ``tenure`` prints ``tenure: error:`` and the first line of
    the message on stderr and exits with :attr:`exit_status` (1). Raised by every
    subcommand."""

    exit_status = 1


class UsageError(CliError):
    """An option's value breaks its rule (the message names the option and the rule):
    status 2, as argparse's own usage errors, but on one line."""

    exit_status = 2


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")


# --- tenure keys -------------------------------------------------------------------


def database_option() -> argparse.ArgumentParser:
    """A parent parser with ``--database-url`` (what :func:`with_engine` reads)."""
    database = argparse.ArgumentParser(add_help=False)
    add_database_option(database)
    return database


def add_database_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--database-url`` to ``parser`` (a subcommand without actions of its own)."""
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL URL (default: TENURE_DATABASE_URL from the settings)",
    )


def register_keys(parser: argparse.ArgumentParser) -> None:
    """Create, revoke and list API keys."""
    database = database_option()
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create", parents=[database], help="create a key and print it (the only time it is shown)"
    )
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        metavar="SCOPE",
        help=f"one of {', '.join(Scope)}; repeat for several",
    )
    create.set_defaults(run=keys_create)

    revoke = actions.add_parser("revoke", parents=[database], help="revoke a key by its id")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(run=keys_revoke)

    listing = actions.add_parser(
        "list", parents=[database], help="list every key (never its secret)"
    )
    listing.set_defaults(run=keys_list)


def keys_create(args: argparse.Namespace) -> int:
    full, new = generate(args.name, args.scopes)  # bad name or scope: ValueError, before I/O
    key = _with_repository(args, lambda repo: repo.create(new))
    _out(f"id:     {key.id}")
    _out(f"name:   {key.name}")
    _out(f"scopes: {_scopes(key)}")
    _out(f"key:    {full}")
    _err("Store the key now: it is shown only this once and cannot be recovered.")
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    key_id: str = args.key_id
    if not _with_repository(args, lambda repo: repo.revoke(key_id)):
        raise CliError(f"no API key with id {key_id!r}")
    _out(f"revoked {key_id}; services stop accepting it at their next key refresh")
    return 0


def keys_list(args: argparse.Namespace) -> int:
    keys = _with_repository(args, lambda repo: repo.list_keys())
    rows = [("ID", "NAME", "SCOPES", "CREATED", "REVOKED")] + [
        (k.id, k.name, _scopes(k), _when(k.created_at), _when(k.revoked_at)) for k in keys
    ]
    _table(rows)
    return 0


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    """Print ``rows`` (the first is the header) as columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _scopes(key: ApiKey) -> str:
    return ",".join(sorted(key.scopes))


def _when(instant: datetime | None) -> str:
    return "-" if instant is None else instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def database_url(args: argparse.Namespace) -> str:
    """``--database-url``, else the settings' (a :class:`CliError` when neither is valid)."""
    if args.database_url:
        return str(args.database_url)
    return common_settings().database_url


def common_settings() -> CommonSettings:
    """The settings from the environment (a :class:`CliError` naming a bad variable)."""
    try:
        return CommonSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = "TENURE_" + "_".join(str(part) for part in first["loc"]).upper()
        raise CliError(f"invalid setting {variable}: {first['msg']}") from None


def with_engine(args: argparse.Namespace, operation: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run one operation on a short-lived engine (``--database-url`` or the settings);
    blocks until it is done. An unreachable database is a :class:`CliError`."""
    try:
        engine = create_engine(database_url(args), pool_size=1)
    except ArgumentError:
        # The URL itself is not echoed: it may hold a password.
        raise CliError(
            "invalid database URL (from --database-url or TENURE_DATABASE_URL)"
        ) from None
    where = engine.url.render_as_string(hide_password=True)

    async def run() -> T:
        try:
            async with asyncio.timeout(DB_TIMEOUT_S):
                return await operation(engine)
        except TimeoutError:
            raise CliError(
                f"database unreachable: no answer from {where} within {DB_TIMEOUT_S:g} s"
            ) from None
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _with_repository(
    args: argparse.Namespace, operation: Callable[[KeyRepository], Awaitable[T]]
) -> T:
    """Run ``operation`` on a key repository; its errors become :class:`CliError`."""
    try:
        return with_engine(args, lambda engine: operation(KeyRepository(engine)))
    except ApiKeyError as exc:
        raise CliError(str(exc)) from exc


# --- tenure dlq --------------------------------------------------------------------


def register_dlq(parser: argparse.ArgumentParser) -> None:
    """Show and replay dead letters (records a consumer could not process)."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    topic_help = (
        "the topic whose dead letters to read: a Tenure topic (notifications, "
        "events.usage, ...; the deployment's prefix is added) or a full topic name"
    )
    listing = actions.add_parser(
        "list", help="list a topic's dead letters, with their error and whether replayed"
    )
    listing.add_argument("topic", metavar="TOPIC", help=topic_help)
    listing.set_defaults(run=dlq_list)
    replay = actions.add_parser(
        "replay",
        help="send the dead letters not replayed yet back to where they came from "
        "(after fixing what made them fail)",
    )
    replay.add_argument("topic", metavar="TOPIC", help=topic_help)
    replay.add_argument(
        "--limit", type=int, metavar="N", help="replay at most N, each partition's oldest first"
    )
    replay.set_defaults(run=dlq_replay)


def physical_topic(settings: CommonSettings, topic: str) -> str:
    """``topic`` as named on the command line, as Kafka names it (prefix added to one
    of :class:`Topic`; ``.dlq`` dropped)."""
    name = topic.removesuffix(DLQ_SUFFIX)
    known = {t.value: t for t in Topic}
    return topic_name(known[name], settings.topic_prefix) if name in known else name


def _with_kafka(operation: Callable[[], Awaitable[T]]) -> T:
    async def run() -> T:
        try:
            async with asyncio.timeout(KAFKA_TIMEOUT_S):
                return await operation()
        except TimeoutError as exc:  # a slow read names its topic; the deadline says nothing
            raise CliError(
                str(exc) or f"Kafka unreachable: no answer within {KAFKA_TIMEOUT_S:g} s"
            ) from None
        except (NoSuchTopic, InvalidRecord, PublishError) as exc:
            raise CliError(str(exc)) from None

    return asyncio.run(run())


def dlq_list(args: argparse.Namespace) -> int:
    settings = common_settings()
    found = _with_kafka(lambda: read_dead_letters(settings, physical_topic(settings, args.topic)))
    header = ("PARTITION", "OFFSET", "FROM", "CONSUMER", "REPLAYED", "ERROR")
    rows = [header] + [
        (
            str(letter.record.partition),
            str(letter.record.offset),
            _origin(letter),
            letter.consumer,
            "yes" if found.replayed(letter) else "no",
            letter.error.splitlines()[0][:120] if letter.error else "",
        )
        for letter in found.letters
    ]
    rows += [
        (str(r.partition), str(r.offset), "?", "?", "never", "no dlq.* headers: not replayable")
        for r in found.unreadable
    ]
    _table(rows)
    _err(f"{found.name}: {len(found.letters)} dead letters, {len(found.waiting)} not replayed")
    return 0


def _origin(letter: DeadLetter) -> str:
    if letter.partition is None:
        return f"{letter.topic} (given up after it was consumed)"
    return f"{letter.topic}:{letter.partition}:{letter.offset}"


def dlq_replay(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit: must be 1 or more, not {args.limit}")
    settings = common_settings()
    report = _with_kafka(
        lambda: replay_dead_letters(
            settings, physical_topic(settings, args.topic), limit=args.limit
        )
    )
    targets = sorted({letter.topic for letter in report.replayed})
    where = f" to {', '.join(targets)}" if targets else ""
    _out(f"{report.topic}: replayed {len(report.replayed)}{where}; {report.left} left")
    return 0
