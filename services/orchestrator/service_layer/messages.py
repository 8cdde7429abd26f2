"""One handler per message the orchestrator consumes, routed by :data:`HANDLERS`.

Each takes the decoded message and keyword-only dependencies, and runs in one
transaction: the projection of what the message says about the customer (profile,
score, plan, subscription, purchases, segment, unsubscribe, a message's outcome), then
:func:`~orchestrator.service_layer.journeys.apply_fact` on the fact it is. Idempotent:
a message handled twice changes nothing more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeAlias

from common.events import LoginEvent, PaymentEvent, ProfileEvent
from common.messages import Delivery, ScoreSnapshot, SignalChange
from orchestrator import metrics
from orchestrator.domain import attribution as A
from orchestrator.domain import decisions as D
from orchestrator.domain import rules as R
from orchestrator.service_layer.context import Context
from orchestrator.service_layer.journeys import apply_fact
from orchestrator.service_layer.ports import JourneyStore, Stores

# Score snapshot fields the playbooks may test (ScoreTrigger / ScoreExit ``field``).
SCORE_FIELDS = ("churn_probability", "risk_score", "feature_adoption", "health_score")
# Payment events that change the customer's plan.
PLAN_CHANGES = frozenset(
    {"subscription_upgraded", "subscription_downgraded", "subscription_started"}
)

Message: TypeAlias = (
    ProfileEvent | ScoreSnapshot | SignalChange | PaymentEvent | LoginEvent | Delivery
)


async def profile_received(
    event: ProfileEvent,
    *,
    stores: Stores,
    context: Context,
    ingested_at: datetime | None = None,
) -> None:
    """Project a profile; one from before the customer's erasure is what was erased."""
    consent = event.consent
    row = {
        "customer_id": event.customer_id,
        "email": event.email,
        "first_name": event.first_name,
        "time_zone": event.time_zone,
        "plan": event.plan,
        "mrr": event.mrr,
        "consent_email": consent.email_marketing if consent else False,
        "consent_in_app": consent.in_app if consent else True,
        "owner_csm_id": event.owner_csm.id if event.owner_csm else None,
        "owner_csm_email": event.owner_csm.email if event.owner_csm else None,
        "profile": event.model_dump(mode="json"),
        "profile_at": event.occurred_at,
    }
    async with stores.begin() as store:
        erased = await store.customers.erased_since(event.customer_id)
        if erased is not None and event.occurred_at <= erased:
            metrics.ERASED_RECORDS.inc()
            return
        await store.customers.upsert_profile(row)


async def score_received(
    snapshot: ScoreSnapshot,
    *,
    stores: Stores,
    context: Context,
    ingested_at: datetime | None = None,
) -> None:
    values = {
        name: float(value)
        for name in SCORE_FIELDS
        if (value := getattr(snapshot, name, None)) is not None
    }
    async with stores.begin() as store:
        await store.customers.upsert_score(
            {
                "customer_id": snapshot.customer_id,
                "as_of": snapshot.as_of,
                "risk_score": snapshot.risk_score,
                "tier": snapshot.tier,
                "churn_probability": snapshot.churn_probability,
                "snapshot": snapshot.model_dump(mode="json"),
            }
        )
        fact = D.ScoreFact(values, snapshot.as_of, snapshot.tier)
        await apply_fact(
            snapshot.customer_id, fact, store=store, context=context, ingested_at=ingested_at
        )


async def signal_changed(
    change: SignalChange,
    *,
    stores: Stores,
    context: Context,
    ingested_at: datetime | None = None,
) -> None:
    async with stores.begin() as store:
        if change.change in ("signal_on", "signal_off"):
            fact = D.SignalFact(change.name, change.change == "signal_on", change.occurred_at)
            await apply_fact(
                change.customer_id, fact, store=store, context=context, ingested_at=ingested_at
            )
        elif change.change == "segment_changed":
            await store.customers.note_segment(change.customer_id, change.current)
        elif change.change == "loyalty_tier_changed":
            await store.customers.note_loyalty_tier(change.customer_id, change.current)
        # tier and band changes arrive with the score snapshot too: nothing more to do.


async def payment_received(
    event: PaymentEvent,
    *,
    stores: Stores,
    context: Context,
    ingested_at: datetime | None = None,
) -> None:
    async with stores.begin() as store:
        customer = event.customer_id
        if event.type in PLAN_CHANGES and event.plan:
            await store.customers.note_plan(customer, event.plan, event.occurred_at)
        if event.type == "purchase" and event.product:
            await store.customers.note_purchase(customer, event.product)
        if event.type in R.SUBSCRIPTION_STATES:
            state = R.SUBSCRIPTION_STATES[event.type]
            await store.customers.note_subscription(customer, state, event.occurred_at)
        # Before the exits: a conversion counts for the journeys as they were when it came.
        await _attribute(event, store=store, context=context)
        fact = D.EventFact(event.type, event.occurred_at, event.plan, event.product)
        await apply_fact(customer, fact, store=store, context=context, ingested_at=ingested_at)


async def _attribute(event: PaymentEvent, *, store: JourneyStore, context: Context) -> None:
    """Attribute a payment that meets playbook goals to the customer's journeys (idempotent
    on the event id: a replayed record adds nothing)."""
    payment = A.Payment(
        event_id=event.event_id,
        type=event.type,
        at=event.occurred_at,
        plan=event.plan,
        product=event.product,
        amount=event.amount,
        currency=event.currency,
        mrr_before=event.mrr_before,
        mrr_after=event.mrr_after,
    )
    books = context.playbooks
    goals = [
        book
        for book in books.values()
        if book.conversion is not None and A.meets_goal(book.conversion, payment)
    ]
    if not goals:
        return
    spans = await store.attributions.journey_spans(
        event.customer_id,
        [book.name for book in goals],
        at=payment.at,
        longest_window=max(book.attribution_window for book in goals),
    )
    found = A.attribute(payment, spans, books, default_currency=context.default_currency)
    for recorded in await store.attributions.record(event.customer_id, found):
        metrics.ATTRIBUTIONS.labels(playbook=recorded.playbook, arm=recorded.arm).inc()


async def login_received(
    event: LoginEvent,
    *,
    stores: Stores,
    context: Context,
    ingested_at: datetime | None = None,
) -> None:
    async with stores.begin() as store:
        fact = D.EventFact(event.type, event.occurred_at)
        await apply_fact(
            event.customer_id, fact, store=store, context=context, ingested_at=ingested_at
        )


async def delivery_reported(
    delivery: Delivery,
    *,
    stores: Stores,
    context: Context,
    ingested_at: datetime | None = None,
) -> None:
    """The notifier's report on a notification: an unsubscribe withdraws consent for good;
    a final outcome settles where the cap counts the message, and one known not sent frees
    its slot for the customer's steps waiting for one."""
    async with stores.begin() as store:
        customer = delivery.customer_id
        if delivery.status == "unsubscribed":
            await store.customers.note_unsubscribed(customer, delivery.occurred_at)
        final = delivery.status in R.NOT_SENT or delivery.status == R.SENT
        if final and delivery.journey_id is not None and delivery.step is not None:
            released = await store.journeys.note_outcome(
                delivery.journey_id, delivery.step, delivery.status, delivery.occurred_at
            )
            if released:
                await store.journeys.wake_waiting(customer, context.clock.now())
        fact = D.DeliveryFact(
            delivery.status, delivery.occurred_at, delivery.journey_id, delivery.notification_id
        )
        await apply_fact(customer, fact, store=store, context=context)


HANDLERS: dict[type[Message], Callable[..., Awaitable[None]]] = {
    ProfileEvent: profile_received,
    ScoreSnapshot: score_received,
    SignalChange: signal_changed,
    PaymentEvent: payment_received,
    LoginEvent: login_received,
    Delivery: delivery_reported,
}


async def handle(
    message: Message,
    *,
    stores: Stores,
    context: Context,
    ingested_at: datetime | None = None,
) -> None:
    """Route ``message`` to its handler (:data:`HANDLERS`, by type). ``ingested_at``: the
    record's ``ingested_at`` header, when ingest accepted the event behind it (a journey
    it starts keeps it; a delivery and a profile start none)."""
    await HANDLERS[type(message)](message, stores=stores, context=context, ingested_at=ingested_at)
