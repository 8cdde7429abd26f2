"""common.outage: what counts as the database being unavailable, and waiting it out."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError

from common.outage import DatabaseUnavailable, ride_out, unavailable


class Flaky:
    """Fails with ``error`` ``times`` times, then returns how many calls it took."""

    def __init__(self, error: BaseException, times: int) -> None:
        self.error, self.times, self.calls = error, times, 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return self.calls


def test_connection_errors_are_unavailable_and_statement_errors_are_not() -> None:
    lost = DBAPIError("SELECT 1", {}, Exception("closed"), connection_invalidated=True)
    assert unavailable(lost)
    assert unavailable(DatabaseUnavailable("refused"))
    assert unavailable(asyncpg.exceptions.CannotConnectNowError("starting up"))
    assert unavailable(asyncpg.exceptions.AdminShutdownError("terminating connection"))
    wrapped = RuntimeError("while claiming")
    wrapped.__cause__ = asyncpg.exceptions.ConnectionDoesNotExistError("closed mid-operation")
    assert unavailable(wrapped)
    assert not unavailable(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not unavailable(asyncpg.exceptions.UndefinedTableError("no such table"))
    assert not unavailable(ConnectionRefusedError("an SMTP server, not the database"))


async def test_an_outage_is_waited_out_and_the_operation_called_again() -> None:
    flaky = Flaky(DatabaseUnavailable("refused"), times=3)
    assert await ride_out(flaky, what="test", first_wait_s=0.001, longest_wait_s=0.002) == 4


async def test_other_errors_propagate_at_once() -> None:
    flaky = Flaky(ValueError("a bug"), times=1)
    with pytest.raises(ValueError):
        await ride_out(flaky, what="test", first_wait_s=0.001)
    assert flaky.calls == 1


async def test_stop_ends_the_wait_with_the_outage() -> None:
    stop = asyncio.Event()
    flaky = Flaky(asyncpg.exceptions.CannotConnectNowError("shutting down"), times=10**9)
    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(DatabaseUnavailable):
        await ride_out(flaky, what="test", stop=stop, first_wait_s=0.01, longest_wait_s=0.01)
    assert flaky.calls > 1
