"""A faust stream's events in batches, each event still acked only once it is handled.

faust's stream iterator hands an agent one event per iteration, and between two it
goes round the event loop (``await asyncio.sleep(0)``), acks, sets the current event
and calls its sensors; ``Stream.take_events`` keeps all of that per event and adds a
processor and a background task. :func:`batches` takes the first event from the
iterator as usual and then, without going round the loop again, the events already
waiting in the stream's queue (up to ``max_events``), doing for each what the
iterator does before it yields: an event fetched before a rebalance (flow control
suspended, or another consumer generation) is acked and left out, and an event of an
acking topic is tracked as pending. The caller handles the batch and returns; only
then are the taken events acked (the first by the iterator, as always), so an offset
is committed only for events whose outputs were handed to the producer that faust
flushes before it commits. If handling raises, the events taken from the queue are
not acked (the first is faust's iterator's, which acks an event whose handler raised).

With ``within_s`` > 0 and nothing waiting after the first event, it waits that long
once for more (coalescing the work of a trickle at the price of that latency); with 0
(the default) a batch is what is already there and never waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.types import EventT


async def batches(
    stream: faust.StreamT[Any], max_events: int, within_s: float = 0.0
) -> AsyncIterator[list[EventT]]:
    """Yield lists of up to ``max_events`` events of ``stream`` (see the module docstring)."""
    app = stream.app
    queue = stream.channel.queue  # type: ignore[attr-defined]
    consumer = app.consumer
    acking_topics = app.topics.acking_topics
    flow_control = app.flow_control
    async for first in stream.events():
        batch = [first]
        if within_s > 0 and max_events > 1 and queue.empty():
            await asyncio.sleep(within_s)
        while len(batch) < max_events and not queue.empty():
            event = queue.get_nowait()
            message = event.message
            if not flow_control.is_active() or message.generation_id != app.consumer_generation_id:
                await stream.ack(event)  # fetched before a rebalance: fetched again after it
                continue
            if message.topic in acking_topics and not message.tracked:
                message.tracked = True
                consumer.track_message(message)
            batch.append(event)
        try:
            yield batch
        finally:
            # faust's iterator acks the stream's current event when it resumes, and the
            # handler made each event of the batch current in turn: the first is its own
            stream._set_current_event(first)  # type: ignore[attr-defined]
        for event in batch[1:]:
            await stream.ack(event)
