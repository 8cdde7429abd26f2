"""Riding out a PostgreSQL outage: one error for "the database is unavailable", one way
to wait for it to come back.

:class:`DatabaseUnavailable` is what every adapter raises when PostgreSQL cannot be
reached or dropped the connection (``common.db.create_engine`` translates the driver's
errors into it, see :func:`unavailable`). It is not the record's fault nor the
request's: consumers must not dead-letter the record, workers must not count a failed
attempt against it, and an HTTP API answers 503. :func:`ride_out` calls an operation
again, with capped exponential backoff and jitter (tenacity), until the database is
back: a loop that waits there has paused taking work, and resumes by itself.

The wait is as long as the outage, not a number of attempts: what is retried is the
database, not the record (a record that fails for any other reason keeps its bounded
retries). ``/readyz`` says not-ready meanwhile, which is the operator's signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import asyncpg
from sqlalchemy.exc import DBAPIError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_never,
    wait_exponential_jitter,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATEs that say the server is not there for us, whatever the statement:
# class 08 (connection exception), admin or crash shutdown, cannot connect now (starting
# up or shutting down), too many connections.
_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")
_CONNECTION_ERRORS = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)

FIRST_WAIT_S = 0.2
LONGEST_WAIT_S = 5.0


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached, or dropped the connection: try again later.

    Whether a statement that was running when the connection dropped took effect is
    unknown: callers retry only what is idempotent (every Tenure write is).
    """


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what caused it (``__cause__``, ``__context__``, a DBAPIError's
    ``orig``), a few levels deep."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 12:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (
            getattr(current, "orig", None),
            current.__cause__,
            current.__context__,
        ):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is unavailable (as opposed to a bad statement,
    a constraint or a bug): a connection refused or lost, a server shutting down or
    starting up, no connection slot left."""
    for error in _chain(exc):
        if isinstance(error, (DatabaseUnavailable, *_CONNECTION_ERRORS)):
            return True
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
        state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if isinstance(state, str) and state.startswith(_UNAVAILABLE_STATES):
            return True
    return False


def describe(exc: BaseException) -> str:
    """One line about a database failure, without the statement or its parameters."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {text}"[:300]


# Operations waiting for the database, by what they are: the first one to wait logs a
# warning, the last one to get through logs that the database is back.
_waiting: Counter[str] = Counter()


async def ride_out(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    stop: asyncio.Event | None = None,
    first_wait_s: float = FIRST_WAIT_S,
    longest_wait_s: float = LONGEST_WAIT_S,
) -> T:
    """``await operation()``, called again while it fails with the database unavailable.

    Waits between calls grow from ``first_wait_s`` to ``longest_wait_s`` (exponential,
    with jitter, so that replicas do not reconnect in step). Any other error propagates
    at once. Blocks as long as the outage lasts; when ``stop`` is set, raises the last
    :class:`DatabaseUnavailable` instead of waiting more (the caller is stopping).
    ``operation`` must be safe to call again (idempotent).
    """

    async def pause(seconds: float) -> None:
        if stop is None:
            await asyncio.sleep(seconds)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)

    def stopping(_: RetryCallState) -> bool:
        return stop is not None and stop.is_set()

    def waiting(state: RetryCallState) -> None:
        if state.attempt_number == 1:
            _waiting[what] += 1
            if _waiting[what] == 1:
                error = state.outcome.exception() if state.outcome else None
                log.warning(
                    "database unavailable, %s waits for it: %s",
                    what,
                    describe(error) if error else "?",
                )

    retrying = AsyncRetrying(
        retry=retry_if_exception(unavailable),
        wait=wait_exponential_jitter(initial=first_wait_s, max=longest_wait_s),
        stop=stopping if stop is not None else stop_never,
        sleep=pause,
        before_sleep=waiting,
        reraise=True,
    )
    attempts = 0
    try:
        async for attempt in retrying:
            attempts = attempt.retry_state.attempt_number
            with attempt:
                result = await operation()
    except BaseException as exc:
        if attempts > 1:
            _back(what, succeeded=False)
        if unavailable(exc) and not isinstance(exc, DatabaseUnavailable):
            raise DatabaseUnavailable(describe(exc)) from exc
        raise
    if attempts > 1:
        _back(what, succeeded=True)
    return result


def _back(what: str, *, succeeded: bool) -> None:
    _waiting[what] -= 1
    if _waiting[what] <= 0:
        del _waiting[what]
        if succeeded:
            log.warning("database available again, %s resumed", what)
