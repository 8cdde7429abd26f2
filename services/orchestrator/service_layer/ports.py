"""The port the use cases run on: the ``JourneyStore``, one transaction's view of the
orchestrator's state, and the plain values that cross it.

The store is split by aggregate: the customers (what the rules know about a customer,
projected from profiles, scores and events), the journeys (state, history, pending
steps and the messages they made), the batched reads and write of a group of due steps,
the held triggers, the paused playbooks, the attributed conversions and the MRR ledger. Two adapters
implement it: PostgreSQL (``adapters/store.py``, what runs) and an in-memory fake
(``adapters/memory.py``, what the fake-clock unit tests run the same use cases on).

Every method runs inside the transaction :meth:`Stores.begin` opened: what it writes
commits with the rest of the use case or not at all. Methods that say they lock take
row locks held until then (the PostgreSQL store blocks while another transaction holds
them; the fake has one caller at a time).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from orchestrator.domain import rules as R
from orchestrator.domain.attribution import Attribution, JourneySpan, Payment
from orchestrator.domain.journey import Change, Journey, State
from orchestrator.domain.movements import Classified, Subscription
from orchestrator.domain.story import StepRecord

# --- values --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    """Who claims due timers (``owner``, unique per replica process) and for how many real
    seconds; a timer whose firing failed ``max_attempts`` times is given up."""

    owner: str
    seconds: float
    max_attempts: int


@dataclass(frozen=True)
class Claimed:
    """A timer leased by :meth:`Stores.claim`: its id, its customer and when it was due."""

    id: int
    customer_id: str
    due_at: datetime


@dataclass
class DueStep:
    """A due step taken for firing: its timer and its journey (one :class:`Journey` object
    per journey of a group, so that what one step does the next one of it sees)."""

    id: int
    step: str
    due_at: datetime
    waiting_since: datetime | None  # deferred for a cap slot, waiting since then
    journey: Journey

    @property
    def customer_id(self) -> str:
        return self.journey.customer_id

    @property
    def playbook(self) -> str:
        return self.journey.playbook


@dataclass(frozen=True)
class HeldTrigger:
    """A pending trigger of a signal playbook that came due (armed, or unblocked)."""

    id: int
    customer_id: str
    playbook: str
    signal: str


@dataclass
class LiveJourney:
    journey_id: str
    playbook: str
    pending: int  # its step timers still pending


@dataclass
class WaitingStep:
    """A step of an active treatment-arm journey that is due or deferred for a cap slot."""

    timer_id: int
    journey_id: str
    playbook: str
    step: str
    since: datetime  # when it first came due
    deferred: bool  # deferred for a cap slot before (its waiting_since is set)


@dataclass
class CustomerFacts:
    """What the step decisions of one customer need, kept up to date while a group fires."""

    customer: R.Customer
    profile: dict[str, Any]  # for the notification's context
    score: dict[str, Any] | None
    sent: list[datetime]  # when the cap counts its marketing messages in the window
    live: list[LiveJourney]
    waiting: list[WaitingStep] = field(default_factory=list)
    postponed: bool = False  # a trigger waits for retention before expansion to lift


@dataclass(frozen=True)
class OutboxRow:
    topic: str
    key: str
    payload: bytes
    headers: Mapping[str, str]


@dataclass
class StepWrites:
    """What a group of fired steps writes, collected while it is decided and written at
    once (:meth:`Steps.write`). History lines keep their order."""

    outbox: list[OutboxRow] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    fired: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    # timer id, due again at, and when it came due if it waits for a cap slot
    deferred: list[tuple[int, datetime, datetime | None]] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)  # journeys completed
    scheduled: list[tuple[str, str, datetime]] = field(default_factory=list)  # journey, step, due
    woken: set[str] = field(default_factory=set)  # customers whose waiting steps are due now
    lifted: set[str] = field(default_factory=set)  # customers retention first no longer blocks

    def __bool__(self) -> bool:
        return bool(
            self.outbox
            or self.changes
            or self.fired
            or self.cancelled
            or self.deferred
            or self.woken
            or self.lifted
        )

    def clear(self) -> None:
        for collected in (
            self.outbox,
            self.changes,
            self.fired,
            self.cancelled,
            self.deferred,
            self.finished,
            self.scheduled,
        ):
            collected.clear()
        self.woken.clear()
        self.lifted.clear()


# --- the store, by aggregate -------------------------------------------------------------


class Customers(Protocol):
    """What the orchestrator knows about customers: profiles, scores and what it learned
    from events (segment, plan, subscription, purchases, unsubscribe). Projections are
    idempotent, and an older record never overwrites a newer one."""

    async def get(self, customer_id: str) -> R.Customer:
        """The customer as the rules see it (defaults when nothing is known)."""

    async def erased_since(self, customer_id: str) -> datetime | None:
        """When the customer was last erased (None: never)."""

    async def upsert_profile(self, row: Mapping[str, Any]) -> None: ...
    async def upsert_score(self, row: Mapping[str, Any]) -> None: ...
    async def note_unsubscribed(self, customer_id: str, at: datetime) -> None: ...
    async def note_segment(self, customer_id: str, segment: str | None) -> None: ...
    async def note_loyalty_tier(self, customer_id: str, tier: str | None) -> None: ...
    async def note_plan(self, customer_id: str, plan: str, at: datetime) -> None: ...
    async def note_subscription(self, customer_id: str, state: str, at: datetime) -> None: ...
    async def note_purchase(self, customer_id: str, product: str) -> None: ...


class Journeys(Protocol):
    """Journeys with their history, pending steps (timers) and the messages they made."""

    def new_id(self, playbook: str) -> str:
        """A fresh journey id."""

    async def start(
        self, journey: Journey, change: Change, schedule: Sequence[tuple[str, datetime | None]]
    ) -> bool:
        """Record a new journey, its first history line and a timer per step of
        ``schedule`` (None: timed from a step not sent yet). False (nothing written) when
        the customer already has a live journey of the playbook."""

    async def get(self, journey_id: str) -> Journey:
        """The journey, locked; raises :class:`~orchestrator.domain.errors.JourneyNotFound`."""

    async def live(self, customer_id: str, *, lock: bool = True) -> list[Journey]:
        """The customer's live (active or paused) journeys, oldest first; locked unless
        ``lock`` is false."""

    async def of_playbook(self, playbook: str, state: State, *, paused_by: str | None) -> list[str]:
        """The ids of the playbook's journeys in ``state`` (and paused by ``paused_by``,
        if given), locked."""

    async def last_ended_at(self, customer_id: str, playbook: str) -> datetime | None: ...

    async def save(self, journey: Journey, change: Change) -> None:
        """Record a pause or a resume: the history line, the state, who paused it."""

    async def end(self, journey: Journey, change: Change, reason: str) -> bool:
        """Record the end of a live journey and cancel its pending steps; whether one of
        them was waiting for a frequency-cap slot."""

    async def add_seen(self, journey_id: str, name: str) -> None:
        """Remember that a name a step waits for was seen (idempotent)."""

    async def note_outcome(self, journey_id: str, step: str, status: str, at: datetime) -> bool:
        """Record a message's final outcome and move where the cap counts it
        (:func:`rules.outcome_after`, :func:`rules.counts_at`). Idempotent. Whether a
        marketing message's slot was released (it is known not sent)."""

    async def wake_waiting(self, customer_id: str, now: datetime) -> int:
        """Make the customer's steps deferred for a cap slot due now (those of active
        journeys due later, not locked by another transaction); how many."""


class Steps(Protocol):
    """The few statements a group of due steps is fired with, whatever its size."""

    async def take(self, lease: Lease, ids: Sequence[int]) -> list[DueStep]:
        """Lock the timers of ``ids`` still leased by ``lease.owner`` and pending, with their
        journeys, in (due, id) order: firing what this returns never fires one twice."""

    async def record_failure(self, lease: Lease, timer_id: int, error: str) -> bool:
        """Note why firing a timer failed; whether it was given up (``max_attempts``)."""

    async def lock_caps(self, customer_ids: Iterable[str]) -> None:
        """Serialise these customers' frequency-cap decisions until the transaction ends
        (sorted: two groups never deadlock); must come before :meth:`gather`."""

    async def gather(
        self, customer_ids: Iterable[str], *, cap_since: datetime, now: datetime
    ) -> tuple[dict[str, CustomerFacts], frozenset[str]]:
        """The facts of every customer of ``customer_ids`` (one entry per timer of the
        group) and the paused playbooks. Waiting steps are looked for only for a customer
        with pending steps besides the group's."""

    async def stories(self, journey_ids: Iterable[str]) -> dict[str, dict[str, StepRecord]]:
        """Where the steps of each journey stand (step -> record), for its CSM tasks."""

    async def write(self, writes: StepWrites, now: datetime) -> None:
        """Write what a group collected, as of one snapshot: the customers woken have their
        waiting steps due now except those this group fired or deferred."""


class Triggers(Protocol):
    """Pending triggers of signal playbooks (``held_triggers``): *armed* (due once the
    signal has been held) or *blocked* until a block lifts. At most one pending trigger
    per customer and playbook."""

    async def arm(
        self, *, customer_id: str, playbook: str, signal: str, now: datetime, due_at: datetime
    ) -> bool:
        """Arm one unless one is pending; whether it was armed."""

    async def block(
        self,
        *,
        customer_id: str,
        playbook: str,
        signal: str,
        why: str,
        now: datetime,
        replace: bool,
    ) -> None:
        """Postpone the trigger until ``why`` lifts; ``replace``: a pending one becomes this
        one (otherwise it is left as it is)."""

    async def suspend(self, customer_id: str, playbooks: Iterable[str], *, why: str) -> int: ...
    async def blocked(self, customer_id: str, why: str) -> list[str]: ...

    async def lift(self, customer_id: str, why: str, due: Mapping[str, datetime]) -> int:
        """The triggers ``why`` blocked are due again at ``due[playbook]``; how many."""

    async def disarm(self, customer_id: str, playbook: str, signal: str) -> int: ...

    async def claim_due(self, now: datetime, limit: int) -> list[HeldTrigger]:
        """Lock up to ``limit`` due triggers no other transaction holds, earliest first."""

    async def mark_fired(self, trigger_id: int) -> None: ...


class Pauses(Protocol):
    """Playbooks an operator paused."""

    async def is_paused(self, playbook: str) -> bool: ...
    async def pause(self, playbook: str, now: datetime, by: str) -> None: ...
    async def resume(self, playbook: str) -> None: ...


class Attributions(Protocol):
    """Conversions attributed to journeys."""

    async def journey_spans(
        self,
        customer_id: str,
        playbooks: Iterable[str],
        *,
        at: datetime,
        longest_window: timedelta,
    ) -> list[JourneySpan]:
        """The customer's journeys of ``playbooks`` that may hold a conversion at ``at``."""

    async def record(self, customer_id: str, found: Iterable[Attribution]) -> list[Attribution]:
        """Record attributions (idempotent); the ones this call recorded."""


class MrrLedger(Protocol):
    """MRR movements and subscription states (portfolio analytics), derived from the log
    of the payment events that may change a subscription; all keyed on the event id.
    Positions are (time, event id): "before" and "from" an event use that order."""

    async def lock(self, customer_id: str) -> None:
        """Hold the customer's ledger until the transaction ends (a rebuild and the live
        consumer may record the same customer at once)."""

    async def log(self, customer_id: str, payment: Payment) -> None:
        """Keep ``payment`` in the log (idempotent: the same event again changes nothing)."""

    async def logged_from(self, customer_id: str, at: datetime, event_id: str) -> list[Payment]:
        """The customer's logged events from the position of ``event_id`` at ``at`` on
        (that event included), in order."""

    async def before(self, customer_id: str, at: datetime, event_id: str) -> Subscription | None:
        """The customer's subscription as derived just before the position of ``event_id``
        at ``at`` (that event's own row excluded). None: nothing recorded before it."""

    async def forget_from(self, customer_id: str, at: datetime, event_id: str) -> None:
        """Remove the customer's derived rows (states, movements) from that position on."""

    async def record(self, classified: Classified) -> None:
        """Record the state and the movement (if any) of one event (replacing what an
        earlier call recorded for the same event id)."""


class JourneyStore(Protocol):
    """One transaction's view of the orchestrator's state."""

    @property
    def customers(self) -> Customers: ...
    @property
    def journeys(self) -> Journeys: ...
    @property
    def steps(self) -> Steps: ...
    @property
    def triggers(self) -> Triggers: ...
    @property
    def pauses(self) -> Pauses: ...
    @property
    def attributions(self) -> Attributions: ...
    @property
    def mrr(self) -> MrrLedger: ...


class Stores(Protocol):
    """Where transactions on the orchestrator's state begin."""

    def begin(self) -> AbstractAsyncContextManager[JourneyStore]:
        """A store in a new transaction, committed when the block ends, rolled back if it
        raises. Raises :class:`common.outage.DatabaseUnavailable` when the database is
        out of reach."""

    async def claim(self, lease: Lease, now: datetime, limit: int) -> list[Claimed]:
        """Lease up to ``limit`` due timers of active journeys nobody holds, earliest
        first, in one atomic statement of its own (commit is immediate)."""
