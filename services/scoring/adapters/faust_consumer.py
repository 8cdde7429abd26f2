"""The scoring worker's faust consumer and transport (faust-streaming 0.15.3, pinned).

Part of the faust-specific code of :mod:`scoring.adapters.faust_app` (its items 2, 5, 8,
9 and 10), checked against the pinned version by ``tests/unit/scoring/test_faust_contract.py``:

2. **Delivery without four tasks per record** (:meth:`_Consumer.wait_first`): faust's
   fetcher wraps every record in ``wait_first``; a delivery that does not suspend skips it.
5. **read_committed without exactly-once** (:class:`_ReadCommittedThread`): faust picks
   it only with ``processing_guarantee="exactly_once"`` (transactions on every output).
8. **Nothing acknowledged that was not applied, across rebalances** (issue 15):

   - faust resumes the stream partitions of a new assignment *before* it seeks them to
     the committed offsets and clears the streams' queues (``on_recovery_completed``:
     resume partitions, seek, ``flow_control.resume()``, which clears). Records fetched
     in between went into the queues and were cleared unapplied, with the fetch position
     past them; on a partition without a committed offset the seek does not move it
     back, and the next commit covered them. Here the stream partitions resumed by faust
     take effect at the ``resume_flow()`` that follows the clear.
   - faust acks an event it skips because it was fetched before a rebalance (the
     stream's ``flow_control``/``generation_id`` check), so its offset could be
     committed by the new generation. Here an ack counts only for an event a stream
     took for processing (tracked) in the current generation; the others are fetched
     again from the committed offset.
9. **Commits past transaction markers in one step** (:meth:`_Consumer._add_gap`): faust
   counts the offsets between two delivered records (with ``read_committed``, the commit
   markers of the producers' transactions) as done, but its gap also covers the later
   record; once that record is acked its offset is listed twice, and a commit only goes
   up to the first repeat: one transaction per commit interval, so the committed offset
   fell ever further behind topics written in transactions (ingest's). The gap ends
   before the record.
10. **An empty set of active partitions is not "all of them"**
   (:class:`_ConsumerThread`): faust hands aiokafka's ``fetched_records`` its live set of
   active partitions, and aiokafka reads "no partitions" as "every assigned partition".
   Between the end of table recovery (the changelogs paused) and the ``resume_flow()``
   that lets the stream partitions in (item 8) that set is empty: a fetch waiting then
   drained the stream partitions' records, faust dropped them as not active, and the
   consumer's position was past them; when faust's seek to the committed offsets had
   come first, nothing brought them back, and a restarted worker scored nothing until
   the next rebalance (tests/integration/test_scoring.py, the SIGKILL test: 5 runs of 23
   under load). The set goes to aiokafka as a view that is never empty to it.
"""

from __future__ import annotations

import inspect
from collections.abc import Coroutine, Generator, Iterable, Iterator
from collections.abc import Set as AbstractSet
from typing import Any

import faust
from faust.transport.consumer import ensure_TPset
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message
from mode.services import WaitResults

READ_COMMITTED = "read_committed"


class _Resumed:
    """A coroutine already run up to its first suspension, awaitable from there on: what
    it yields goes up to the awaiting task, what the task sends or throws goes down."""

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
    else ``(False, awaitable of the rest)``. Its exceptions propagate."""
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, _Resumed(coro, yielded)


class _Consumer(driver.Consumer):
    """faust's aiokafka consumer, delivering eagerly (item 2), reading committed (5),
    acknowledging only what was applied across rebalances (8) and fetching only from its
    active partitions (10)."""

    read_committed = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: set[TP] = set()  # stream partitions resumed by faust, not yet fetched

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        thread = _ReadCommittedThread if self.read_committed else _ConsumerThread
        return thread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        # the fetcher's form, wait_first(deliver(record), suspend_flow.wait()): a delivery
        # almost never suspends (the event goes into the stream's queue), and then the four
        # tasks faust makes to race it against a rebalance are not needed
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

    # -- item 8 ---------------------------------------------------------------------------

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        """Changelog partitions resume now (table recovery reads them); stream partitions
        at the next :meth:`resume_flow`, after faust's seek and its clearing of the
        streams' queues."""
        tps = ensure_TPset(tps)
        streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
        self._held |= streams
        super().resume_partitions(tps - streams)

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        tps = ensure_TPset(tps)
        self._held -= tps
        super().pause_partitions(tps)

    def resume_flow(self) -> None:
        super().resume_flow()
        if self._held:
            held, self._held = self._held, set()
            super().resume_partitions(held & ensure_TPset(self.assignment()))

    # -- item 9 ---------------------------------------------------------------------------

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # faust's fetcher calls this with the delivered record's offset as offset_to
        if offset_to - 1 >= offset_from:
            await super()._add_gap(tp, offset_from, offset_to - 1)

    def ack(self, message: Message) -> bool:
        """faust's ack for an event a stream took (tracked) in this generation; any other
        (skipped by faust as fetched before a rebalance, or of an earlier generation) is
        marked done without its offset becoming committable: it is fetched again."""
        generation = message.generation_id
        if message.tracked and generation in (None, self.app.consumer_generation_id):
            return super().ack(message)
        message.acked = True
        self._unacked_messages.discard(message)
        return False


class NeverAll(AbstractSet[Any]):
    """Item 10: the live set of active partitions as aiokafka's ``fetched_records`` reads
    it, where an empty (false) set means every assigned partition: this view of it is
    never false, so an empty one means none."""

    __slots__ = ("_live",)

    def __init__(self, live: AbstractSet[Any]) -> None:
        self._live = live

    def __contains__(self, tp: object) -> bool:
        return tp in self._live

    def __iter__(self) -> Iterator[Any]:
        return iter(self._live)

    def __len__(self) -> int:
        return len(self._live)

    def __bool__(self) -> bool:
        return True


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        if active_partitions is not None:  # None: a client-only app reads every partition
            active_partitions = NeverAll(active_partitions)
        return await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )


class _ReadCommittedThread(_ConsumerThread):
    # item 5: faust builds its consumer read_uncommitted unless exactly-once (no setting)
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if not hasattr(consumer, "_isolation_level"):  # pragma: no cover - guards an upgrade
            raise RuntimeError("this aiokafka version keeps its isolation level elsewhere")
        consumer._isolation_level = READ_COMMITTED  # read by aiokafka's start(), not before
        return consumer


class _UncommittedConsumer(_Consumer):
    read_committed = False


class _Transport(driver.Transport):
    Consumer = _Consumer


class _UncommittedTransport(driver.Transport):
    Consumer = _UncommittedConsumer


def transport_for(app: faust.App, *, read_committed: bool) -> driver.Transport:
    """The transport ``app`` runs on: its consumer is :class:`_Consumer`."""
    transport = _Transport if read_committed else _UncommittedTransport
    return transport(app.conf.broker_consumer, app)


def isolation_level(app: faust.App) -> str | None:
    """The isolation level of ``app``'s running consumer (None before it runs)."""
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    return getattr(consumer, "_isolation_level", None)
