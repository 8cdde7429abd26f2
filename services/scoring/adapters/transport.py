"""The scorer's faust Kafka transport: read_committed, and a record handed on without tasks.

**read_committed.** faust-streaming 0.15.3 picks ``isolation_level="read_committed"``
only when ``processing_guarantee`` is ``exactly_once`` (``_create_worker_consumer`` in
``faust/transport/drivers/aiokafka.py``), and exactly-once also turns every output
into a Kafka transaction per partition, which the scorer does not need: its handlers
are idempotent per event id. faust has no setting for the isolation level alone, so
this transport builds the consumer exactly as faust does and switches it to
``read_committed`` before it starts (aiokafka reads the level when it creates its
fetcher in ``start()``). Records of an aborted transaction, e.g. an ingest write that
was answered 503, are then never seen.

**Delivery without tasks.** faust's fetcher hands every record to the conductor with
``wait_first(deliver(record), suspend_flow.wait())``: four tasks, an ``asyncio.wait``
and three cancellations per record, so that a delivery blocked on a full stream
buffer can be abandoned when a rebalance suspends the flow. A delivery almost never
blocks (the conductor puts the event into the stream's queue and returns), so this
consumer runs the delivery at once up to its first suspension: when it finishes
there, that is the first of the awaitables to complete and nothing else is created;
when it suspends (a full buffer, the conductor's lock held), the rest of it goes
through faust's ``wait_first`` with the same competitors as before. It also lets the
fetcher put a whole fetched batch into the stream's queue in one go (it yields every
100 records), which is what lets the agents take their events in batches
(``scoring.adapters.batches``).
"""

from __future__ import annotations

import inspect
from collections.abc import Coroutine, Generator
from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver
from mode.services import WaitResults

READ_COMMITTED = "read_committed"


class Resumed:
    """A coroutine already run up to its first suspension, awaitable from there on.

    Awaiting it drives the coroutine on as a task would have: what the coroutine
    yielded (the future it waits on) is passed up to the awaiting task, and what the
    task sends or throws back (a result, a cancellation) is passed down.
    """

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self._coro, self._yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation or error thrown in by the task
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


def start_eagerly(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` up to its first suspension: ``(True, result)`` if it finished there,
    else ``(False, Resumed)`` to await for the rest. Its exceptions propagate."""
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, Resumed(coro, yielded)


class TenureConsumer(driver.Consumer):
    """faust's aiokafka consumer, delivering eagerly; ``read_committed`` unless told not to."""

    read_committed = True

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        if not self.read_committed:
            return super()._new_consumer_thread()
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """faust's ``wait_first``, with a delivery run eagerly (see the module docstring).

        Only the fetcher's form (two coroutines: the delivery and the flow's suspension)
        takes the fast path; every other call is faust's own.
        """
        if (
            len(coros) != 2
            or not all(inspect.iscoroutine(c) for c in coros)
            or self._stopped.is_set()
            or self._crashed.is_set()
        ):
            return await super().wait_first(*coros, timeout=timeout)
        first, other = coros
        try:
            done, value = start_eagerly(first)
        except BaseException:
            other.close()
            raise
        if done:
            other.close()  # never started: nothing to cancel
            return WaitResults([first], [value], False)
        return await super().wait_first(value, other, timeout=timeout)


class ReadCommittedConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if not hasattr(consumer, "_isolation_level"):  # pragma: no cover - guards an upgrade
            raise RuntimeError("this aiokafka version keeps its isolation level elsewhere")
        consumer._isolation_level = READ_COMMITTED
        return consumer


class ReadUncommittedConsumer(TenureConsumer):
    read_committed = False


class TenureTransport(driver.Transport):
    Consumer = TenureConsumer


class ReadUncommittedTransport(driver.Transport):
    Consumer = ReadUncommittedConsumer


def use_tenure_transport(app: faust.App, *, read_committed: bool = True) -> None:
    """Give ``app``'s worker the scorer's consumer. Call before the worker starts."""
    transport = TenureTransport if read_committed else ReadUncommittedTransport
    app.transport = transport(app.conf.broker_consumer, app)


def use_read_committed(app: faust.App) -> None:
    """Make ``app``'s worker consume with ``read_committed``. Call before the worker starts."""
    use_tenure_transport(app, read_committed=True)


def isolation_level(app: faust.App) -> str | None:
    """The isolation level of ``app``'s running consumer (for tests and the log)."""
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    return getattr(consumer, "_isolation_level", None)
