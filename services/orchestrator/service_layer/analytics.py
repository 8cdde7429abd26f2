"""Portfolio analytics: record what a payment event does to the customer's MRR and
subscription (``orchestrator.domain.movements``), for the portfolio figures.

Run by the analytics consumer (a consumer group of its own on ``events.payment``) and by
``tenure analytics rebuild``, on the same events in the same order per customer (one
partition per customer), so both write the same rows.
"""

from __future__ import annotations

from common.events import PaymentEvent
from orchestrator import metrics
from orchestrator.domain.attribution import Payment
from orchestrator.domain.movements import CHANGES_SUBSCRIPTION, Classified, classify, following
from orchestrator.service_layer.context import Context
from orchestrator.service_layer.ports import Stores


def payment_of(event: PaymentEvent) -> Payment:
    """The payment event as the domain sees it."""
    return Payment(
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


async def record_payment(
    event: PaymentEvent, *, stores: Stores, context: Context
) -> Classified | None:
    """Record the movement and subscription state ``event`` makes, in one transaction:
    log the event, then derive the customer's rows again from its position (time, event
    id) on, each event classified against the subscription derived just before it.

    The rows are therefore the same whatever order the events arrive in (a late event
    re-derives those after it) and however often each comes: idempotent on the event
    id. An event older than its customer's erasure is what was erased: nothing is
    recorded. Returns what ``event`` itself made (None: it changes no subscription).
    Raises :class:`common.outage.DatabaseUnavailable` while the database is out of reach.
    """
    if event.type not in CHANGES_SUBSCRIPTION:
        return None
    customer, payment = event.customer_id, payment_of(event)
    mine: Classified | None = None
    async with stores.begin() as store:
        erased = await store.customers.erased_since(customer)
        if erased is not None and event.occurred_at <= erased:
            metrics.ERASED_RECORDS.inc()
            return None
        ledger = store.mrr
        await ledger.lock(customer)
        await ledger.log(customer, payment)
        at, event_id = payment.at, payment.event_id
        before = await ledger.before(customer, at, event_id)
        await ledger.forget_from(customer, at, event_id)
        for logged in await ledger.logged_from(customer, at, event_id):
            found = classify(customer, logged, before, default_currency=context.default_currency)
            if found is None:
                continue
            await ledger.record(found)
            before = following(found)
            if logged.event_id == event_id:
                mine = found
    if mine is not None and mine.movement is not None:
        metrics.MRR_MOVEMENTS.labels(kind=mine.movement.kind.value).inc()
    return mine
