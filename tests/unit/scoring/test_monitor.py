"""The worker's lean faust monitor: no per-record statistics, faust's own diagnostics kept."""

from __future__ import annotations

from typing import Any

from faust.types import TP

from scoring.adapters.monitor import LeanMonitor
from scoring.app import create_app
from scoring.domain.model import DEFAULT_MODEL_PATH, load_model
from scoring.settings import ScoringSettings


class _Sink:
    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Any = None) -> None:
        return None


def test_the_app_runs_with_the_lean_monitor(unit_settings: ScoringSettings) -> None:
    app = create_app(unit_settings, load_model(DEFAULT_MODEL_PATH), sink=_Sink())
    assert isinstance(app.monitor, LeanMonitor)


def test_per_record_hooks_keep_no_statistics_but_the_stream_inbound_time() -> None:
    monitor = LeanMonitor()
    tp = TP("t.events.usage", 1)
    before = (monitor.messages_received_total, monitor.events_total, monitor.messages_sent)
    assert monitor.on_stream_event_in(tp, 7, stream=object(), event=object()) is None
    monitor.on_message_in(tp, 7, message=object())
    monitor.on_send_initiated(object(), "t.scores", object(), 3, 10)
    assert (monitor.messages_received_total, monitor.events_total, monitor.messages_sent) == before
    assert tp in monitor.stream_inbound_time  # faust's stalled-stream check reads it
    assert monitor.tables == {} and not monitor.events_runtime
