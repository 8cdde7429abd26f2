"""A faust monitor without the per-record bookkeeping.

faust calls its monitor (a sensor) for every record read, every event a stream hands
to an agent and back, every table get and set and every record sent. The default
``faust.sensors.Monitor`` keeps counters, per-stream and per-task tallies and timing
deques there, for faust's web views and its statsd/datadog sensors, none of which the
scorer uses (its metrics are its own, ``scoring.metrics``). This monitor keeps what
faust itself reads (the time a partition last delivered an event, for its "stream
idle" diagnostics; offsets and commit bookkeeping, untouched) and drops the rest.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from faust.sensors import Monitor


class LeanMonitor(Monitor):
    """faust's monitor minus the per-record statistics (see the module docstring)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        # the aiokafka driver's stall check reads this (faust/transport/drivers/aiokafka.py)
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        return None
