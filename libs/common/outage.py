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
retries, which :func:`ride_out` also counts: it is the code base's one retry helper,
used for a broker that does not answer yet too). ``/readyz`` says not-ready meanwhile,
which is the operator's signal.
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
JITTER_S = 1.0  # at most this much is added to each wait, at random


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
    attempts: int = 1,
    give_up: tuple[type[BaseException], ...] = (),
    outage: Callable[[BaseException], bool] = unavailable,
    first_wait_s: float = FIRST_WAIT_S,
    longest_wait_s: float = LONGEST_WAIT_S,
    jitter_s: float = JITTER_S,
) -> T:
    """``await operation()``, called again while it fails with an outage; the code base's
    one retry helper.

    - An error ``outage`` says is one (by default: the database is unavailable) is
      waited out, however long it lasts: what is retried is the resource, not the
      operation. When ``stop`` is set, the last one is raised instead of waiting more
      (as :class:`DatabaseUnavailable` for the database: the caller is stopping).
    - An error of a ``give_up`` type propagates at once (e.g. an invalid record: calling
      again cannot help).
    - Any other error: the operation is called up to ``attempts`` times in all, then the
      error propagates (the default, 1, lets it propagate at once).

    Waits between calls grow from ``first_wait_s`` to ``longest_wait_s`` (exponential,
    plus up to ``jitter_s`` at random, so that replicas do not retry in step).
    ``operation`` must be safe to call again (idempotent).
    """

    async def pause(seconds: float) -> None:
        if stop is None:
            await asyncio.sleep(seconds)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)

    failures = 0  # calls that failed with an error other than an outage
    waited = False  # whether this call counts in _waiting (it waited for an outage)

    def again(state: RetryCallState) -> bool:
        nonlocal failures
        error = state.outcome.exception() if state.outcome else None
        if not isinstance(error, Exception) or isinstance(error, give_up):
            return False  # success, a cancellation, or an error calling again cannot help
        if outage(error):
            return True
        failures += 1
        return failures < attempts

    def stopping(state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        return stop is not None and stop.is_set() and error is not None and outage(error)

    def waiting(state: RetryCallState) -> None:
        nonlocal waited
        error = state.outcome.exception() if state.outcome else None
        if error is None or not outage(error):
            log.warning(
                "%s failed (attempt %d of %d), trying again: %r",
                what,
                failures,
                attempts,
                error,
                exc_info=error,
            )
            return
        if not waited:
            waited = True
            _waiting[what] += 1
            if _waiting[what] == 1:
                log.warning(
                    "%s, %s waits for it: %s",
                    "database unavailable" if outage is unavailable else "unavailable",
                    what,
                    describe(error),
                )

    # A call that succeeds, the common case, costs one await: tenacity's state, wait and
    # callbacks (about 50 µs a call here, and cyclic garbage; the notifier rides out three
    # calls an email) are built only after a failure, replayed into them as the first
    # attempt. docs/decisions.md, "A call that succeeds costs one await".
    try:
        return await operation()
    except Exception as exc:
        first: Exception | None = exc

    async def call() -> T:
        nonlocal first
        if first is not None:
            failed, first = first, None
            raise failed
        return await operation()

    retrying = AsyncRetrying(
        retry=again,
        wait=wait_exponential_jitter(initial=first_wait_s, max=longest_wait_s, jitter=jitter_s),
        stop=stopping,
        sleep=pause,
        before_sleep=waiting,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                result = await call()
    except BaseException as exc:
        if waited:
            _back(what, succeeded=False)
        if outage is unavailable and unavailable(exc) and not isinstance(exc, DatabaseUnavailable):
            raise DatabaseUnavailable(describe(exc)) from exc
        raise
    if waited:
        _back(what, succeeded=True, database=outage is unavailable)
    return result


def _back(what: str, *, succeeded: bool, database: bool = True) -> None:
    _waiting[what] -= 1
    if _waiting[what] <= 0:
        del _waiting[what]
        if succeeded:
            resource = "database available" if database else "available"
            log.warning("%s again, %s resumed", resource, what)
