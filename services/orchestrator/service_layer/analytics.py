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
from orchestrator.domain.movements import Classified, classify
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
    """Record the movement and subscription state ``event`` makes, in one transaction,
    classified against the customer's subscription as recorded just before it.

    Idempotent on the event id: the same event recorded again gives the same rows. An
    event older than its customer's erasure is what was erased: nothing is recorded.
    Returns what was recorded (None: the event moves no subscription). Raises
    :class:`common.outage.DatabaseUnavailable` while the database is out of reach.
    """
    customer = event.customer_id
    async with stores.begin() as store:
        erased = await store.customers.erased_since(customer)
        if erased is not None and event.occurred_at <= erased:
            metrics.ERASED_RECORDS.inc()
            return None
        before = await store.mrr.before(customer, event.occurred_at, event.event_id)
        found = classify(
            customer, payment_of(event), before, default_currency=context.default_currency
        )
        if found is None:
            return None
        await store.mrr.record(found)
    if found.movement is not None:
        metrics.MRR_MOVEMENTS.labels(kind=found.movement.kind.value).inc()
    return found
