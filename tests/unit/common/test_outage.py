"""common.outage: what counts as the database being unavailable, and waiting it out."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError

from common.outage import DatabaseUnavailable, ride_out, unavailable

FAST = {"first_wait_s": 0.001, "longest_wait_s": 0.002}


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


async def test_other_errors_are_called_again_up_to_attempts_in_all() -> None:
    flaky = Flaky(ValueError("flaky"), times=2)
    assert await ride_out(flaky, what="test", attempts=3, **FAST) == 3
    always = Flaky(ValueError("a bug"), times=10**9)
    with pytest.raises(ValueError):
        await ride_out(always, what="test", attempts=3, **FAST)
    assert always.calls == 3


async def test_an_outage_does_not_count_against_the_attempts() -> None:
    flaky = Flaky(DatabaseUnavailable("refused"), times=10)
    assert await ride_out(flaky, what="test", attempts=2, **FAST) == 11


async def test_give_up_errors_and_cancellations_are_never_called_again() -> None:
    invalid = Flaky(KeyError("invalid"), times=1)
    with pytest.raises(KeyError):
        await ride_out(invalid, what="test", attempts=5, give_up=(KeyError,), **FAST)
    assert invalid.calls == 1
    cancelled = Flaky(asyncio.CancelledError(), times=1)
    with pytest.raises(asyncio.CancelledError):
        await ride_out(cancelled, what="test", attempts=5, **FAST)
    assert cancelled.calls == 1


async def test_another_kind_of_outage_is_waited_out_too() -> None:
    broker_down = Flaky(ConnectionRefusedError("the broker is not up yet"), times=3)

    def down(exc: BaseException) -> bool:
        return isinstance(exc, OSError)

    assert await ride_out(broker_down, what="test", outage=down, **FAST) == 4


async def test_a_call_that_succeeds_builds_no_retry_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The common case costs one await: tenacity's machinery (about 55 µs a call, a tenth
    of the notifier's CPU per email) is built only after a failure."""
    import common.outage

    def no_retrying(*args: object, **kwargs: object) -> None:
        raise AssertionError("tenacity's AsyncRetrying built for a call that succeeded")

    monkeypatch.setattr(common.outage, "AsyncRetrying", no_retrying)
    assert await ride_out(Flaky(ValueError("never"), times=0), what="test") == 1


async def test_the_first_failure_counts_as_the_first_attempt() -> None:
    """After the direct first call fails, the retry loop starts from that failure: it is
    neither called again at once nor counted twice."""
    once = Flaky(ValueError("flaky"), times=1)
    assert await ride_out(once, what="test", attempts=2, **FAST) == 2
    twice = Flaky(ValueError("flaky"), times=2)
    with pytest.raises(ValueError):
        await ride_out(twice, what="test", attempts=2, **FAST)
    assert twice.calls == 2
    lost = Flaky(DBAPIError("SELECT 1", {}, Exception("closed"), connection_invalidated=True), 1)
    assert await ride_out(lost, what="test", **FAST) == 2
