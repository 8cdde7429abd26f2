"""`make run` keeps its simulated clock with its data (.stack/): a restart resumes it.

A restarted run used to start the clock again from the real date while the previous
run's timers, weeks ahead in simulated time, stayed in PostgreSQL and fired during the
new run (at customers the new run knew nothing of).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.clock import ScaledClock
from devstack.__main__ import banner
from devstack.stack import Stack


def shared_clock(stack: Stack) -> ScaledClock:
    """The clock the stack's processes build from their environment."""
    env = stack.env()
    return ScaledClock(
        scale=float(env["TENURE_TIME_SCALE"]),
        epoch=datetime.fromisoformat(env["TENURE_CLOCK_EPOCH"]),
    )


def test_a_restarted_stack_resumes_the_simulated_clock_where_it_stopped(tmp_path: Path) -> None:
    first = Stack(root=tmp_path, time_scale=1440.0, database_url="postgresql://x@/tenure")
    time.sleep(0.3)  # 7 simulated minutes
    reached = shared_clock(first).now()
    first.stop()
    time.sleep(0.3)  # the stack is down: simulated time does not pass

    second = Stack(root=tmp_path, time_scale=1440.0, database_url="postgresql://x@/tenure")
    resumed = shared_clock(second).now()
    # Not back at today's date (minutes behind), not on by the downtime x 1440 either.
    assert reached <= resumed <= reached + timedelta(minutes=3)
    assert second.resumed_from is not None
    assert "resumed where the last run stopped" in banner(second, with_prometheus=False)


def test_a_new_folder_starts_the_clock_now_and_says_so(tmp_path: Path) -> None:
    stack = Stack(root=tmp_path / "fresh", time_scale=1440.0, database_url="postgresql://x@/t")
    assert abs(shared_clock(stack).now() - datetime.now(UTC)) < timedelta(minutes=2)
    assert stack.resumed_from is None
    assert "a new clock" in banner(stack, with_prometheus=False)


@pytest.mark.parametrize("scale", [0.5, 1.0, 60.0, 14_400.0])
def test_the_resuming_epoch_shows_the_instant_reached(scale: float) -> None:
    from devstack.stack import resuming_epoch

    now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    reached = datetime(2026, 3, 20, 17, 30, tzinfo=UTC) if scale != 1 else now
    epoch = resuming_epoch(reached, scale, now)
    simulated = epoch.timestamp() + (now.timestamp() - epoch.timestamp()) * scale
    assert simulated == pytest.approx(reached.timestamp(), abs=0.05)
