"""The delivery use cases: what happens to one notification, sent at most once in effect.

Two ways in: :func:`receive` for a notification consumed from ``notifications``, and
:func:`retry_due` for attempts the delivery log says are due again (on the shared clock)
or were left half-done by a worker that died. Both end in :func:`attempt`, where the
notification goes to the handler of its channel (:data:`~.channels.CHANNELS`) and its
outcome is decided: sent, suppressed, bounced, scheduled again (a transient failure,
with backoff, for at most ``retry_max_age_s``), ``unknown`` (an email the mail server may
have accepted without answering, which the resend policy does not send twice) or
dead-lettered with its reason (a broken template, a missing field, a permanent refusal,
or retries exhausted). Every final
outcome is published on ``deliveries`` and counted; :func:`report_unreported` publishes
those a failed publish left behind.

Every function takes its dependencies as ``deps=`` (:class:`~.context.Dependencies`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime, timedelta

from common import causation
from common.kafka import INVALID, Record
from common.messages import Delivery, DeliveryStatus, Notification
from common.outage import ride_out
from common.topics import Topic, topic_name
from notifier import metrics
from notifier.domain import messages
from notifier.domain.messages import NoRoute
from notifier.domain.render import RenderError
from notifier.errors import Bounced, OutcomeUnknown, PermanentSendError, SendError, Suppressed
from notifier.service_layer.channels import CHANNELS, UNCHECKED, Suppression
from notifier.service_layer.context import Dependencies

log = logging.getLogger(__name__)

# Outcome in the log -> status on the deliveries topic.
REPORTED: Mapping[str, DeliveryStatus] = {
    "sent": "sent",
    "suppressed": "suppressed",
    "bounced": "bounced",
    "dead": "failed",
    "unknown": "unknown",
}
UNKNOWN_DETAIL = (
    "in flight when a notifier stopped: handed to the mail server, answer never logged; "
    "may have been delivered, not sent again (TENURE_NOTIFIER_EMAIL_RESEND_AFTER_CRASH)"
)
UNANSWERED_DETAIL = (
    "handed to the mail server, which never answered: may have been delivered, not sent "
    "again (TENURE_NOTIFIER_EMAIL_RESEND_AFTER_CRASH)"
)


async def receive(
    raw: bytes,
    *,
    deps: Dependencies,
    ingested_at: datetime | None = None,
    replayed: bool = False,
) -> None:
    """Deliver one record of ``notifications`` unless its id was seen before.

    ``ingested_at`` (the record's header): when ingest accepted the event this
    notification is the immediate reaction to; if it is sent now, the event-to-send
    latency is observed (:func:`observe_reaction`).

    Raises a decode error (one of :data:`common.kafka.INVALID`: the consumer dead-letters
    the record) for a value that is not a valid notification; a Kafka or database outage
    propagates (the consumer retries, offsets uncommitted). Idempotent: a replay finds
    the id in the delivery log and sends nothing; it only publishes an outcome that was
    logged but never reached Kafka. Except ``replayed`` (the record came back from the
    dead-letter topic, ``tenure dlq replay``): a notification given up on (``dead``) is
    attempted again, once; one sent, or possibly sent, is not.
    """
    n = Notification.model_validate_json(raw)
    now = deps.clock.now()
    check = n.channel == "email" and bool(n.recipient) and messages.is_marketing(n)
    claimed = await deps.log.claim(
        notification_id=n.notification_id,
        customer_id=n.customer_id,
        channel=n.channel,
        payload=raw,
        now=now,
        address=n.recipient if check else None,
        ingested_at=ingested_at,
    )
    existing = claimed.existing
    if (
        existing is not None
        and replayed
        and existing.status == "dead"
        and await deps.log.reclaim_dead(n.notification_id, payload=raw, now=now)
    ):
        log.info("dead notification replayed", extra={"notification_id": n.notification_id})
        existing = None
    if existing is not None:
        metrics.NOTIFICATIONS.labels(channel=n.channel, outcome="duplicate").inc()
        if existing.status in REPORTED and not existing.reported:
            # The outcome was logged but never reached Kafka (a publish failed).
            await _report(n, existing.status, existing.detail, deps=deps)
            await deps.log.mark_reported(n.notification_id)
        return
    await attempt(
        n,
        attempts=1,
        first_attempt_at=now,
        raw=raw,
        suppressed=claimed.suppressed,
        deps=deps,
        ingested_at=ingested_at,
    )


async def retry_due(*, deps: Dependencies) -> int:
    """Attempt every notification due again now; how many were attempted.

    An email a dead worker had ``handed`` to the mail server is sent again only if the
    crash policy says so (:meth:`~.context.Dependencies.resent_after_crash`); otherwise
    its outcome is ``unknown``.
    """
    settings = deps.settings
    claims = await deps.log.claim_due(
        now=deps.clock.now(),
        limit=settings.retry_batch,
        lease=timedelta(seconds=settings.sending_lease_s),
    )
    for claim in claims:
        try:
            n = Notification.model_validate_json(claim.payload)
        except INVALID as exc:  # a payload stored by an older release
            await deps.log.finish(claim.notification_id, "dead", f"undecodable: {exc}")
            continue
        if claim.previous == "handed" and not deps.resent_after_crash(n):
            metrics.TAKEN_OVER.labels(channel=n.channel, outcome="unknown").inc()
            log.warning(
                "email in flight at a crash recorded unknown, not sent again",
                extra={"notification_id": n.notification_id},
            )
            await _final(n, "unknown", UNKNOWN_DETAIL, deps=deps)
            continue
        if claim.previous != "retrying":
            metrics.TAKEN_OVER.labels(channel=n.channel, outcome="resent").inc()
        await attempt(
            n,
            attempts=claim.attempts,
            first_attempt_at=claim.first_attempt_at,
            raw=claim.payload,
            deps=deps,
            ingested_at=claim.ingested_at,
        )
    return len(claims)


async def report_unreported(*, deps: Dependencies) -> int:
    """Publish outcomes logged but never published (a publish that failed), once their
    row has been quiet for the sending lease; how many were published."""
    rows = await deps.log.unreported(
        limit=deps.settings.retry_batch,
        quiet=timedelta(seconds=deps.settings.sending_lease_s),
    )
    for row in rows:
        n = Notification.model_validate_json(row.payload)
        await _report(n, row.status, row.detail, deps=deps)
        await deps.log.mark_reported(n.notification_id)
    return len(rows)


async def attempt(
    n: Notification,
    *,
    attempts: int,
    first_attempt_at: datetime,
    raw: bytes,
    deps: Dependencies,
    suppressed: Suppression = UNCHECKED,
    ingested_at: datetime | None = None,
) -> str:
    """Try ``n`` once, through the handler of its channel; the status the log now holds.

    ``ingested_at``: see :func:`receive` (a retry's, as the delivery log kept it).

    ``suppressed`` is the address's suppression as read with the claim, if it was. A
    database outage before or during the send is waited out (nothing was sent yet: the
    database is read or written before the send, or is the send, as for the inbox).
    """
    started = time.perf_counter()
    handler = CHANNELS[n.channel]
    links = deps.links.for_notification(n)
    try:
        await ride_out(lambda: handler(n, links, deps=deps, suppressed=suppressed), what="delivery")
    except Suppressed as exc:
        return await _final(n, "suppressed", str(exc), deps=deps)
    except Bounced as exc:
        metrics.ATTEMPT_FAILURES.labels(channel=n.channel, kind="permanent").inc()
        metrics.send_failed(n.channel, exc)
        return await _final(n, "bounced", str(exc), deps=deps)
    except (RenderError, NoRoute) as exc:
        metrics.ATTEMPT_FAILURES.labels(channel=n.channel, kind="render").inc()
        return await _dead(n, raw, "render", str(exc), deps=deps)
    except PermanentSendError as exc:
        metrics.ATTEMPT_FAILURES.labels(channel=n.channel, kind="permanent").inc()
        metrics.send_failed(n.channel, exc)
        return await _dead(n, raw, "permanent", str(exc), deps=deps)
    except OutcomeUnknown as exc:
        metrics.ATTEMPT_FAILURES.labels(channel=n.channel, kind="unknown").inc()
        metrics.send_failed(n.channel, exc)
        if deps.resent_after_crash(n):
            return await _retry(n, exc, attempts, first_attempt_at, raw, deps=deps)
        log.warning(
            "email without an answer recorded unknown, not sent again: %s",
            str(exc)[:300],
            extra={"notification_id": n.notification_id},
        )
        return await _final(n, "unknown", f"{UNANSWERED_DETAIL}; {exc}", deps=deps)
    except SendError as exc:
        metrics.ATTEMPT_FAILURES.labels(channel=n.channel, kind="transient").inc()
        metrics.send_failed(n.channel, exc)
        return await _retry(n, exc, attempts, first_attempt_at, raw, deps=deps)
    metrics.SEND_SECONDS.labels(channel=n.channel).observe(time.perf_counter() - started)
    observe_reaction(n, ingested_at, deps=deps)
    return await _final(n, "sent", None, deps=deps)


def observe_reaction(n: Notification, ingested_at: datetime | None, *, deps: Dependencies) -> None:
    """Observe the event-to-send latency of ``n``, just sent (emailed, stored in the inbox
    or posted, at its first attempt or a later one), when it is the immediate reaction to
    an event whose ingest instant it carries; a notification without one (sent later by
    design, or older) is not."""
    if ingested_at is None:
        return
    seconds = causation.elapsed_s(deps.clock, ingested_at)
    metrics.EVENT_TO_SEND_SECONDS.labels(playbook=n.playbook, channel=n.channel).observe(seconds)


async def _retry(
    n: Notification,
    exc: SendError,
    attempts: int,
    first_attempt_at: datetime,
    raw: bytes,
    *,
    deps: Dependencies,
) -> str:
    """Schedule the next attempt by the retry policy, or give up past its age limit."""
    due = deps.policy.next_attempt(
        first_attempt_at=first_attempt_at,
        now=deps.clock.now(),
        failed_attempts=attempts,
        u=deps.uniform(),
    )
    if due is None:
        return await _dead(
            n, raw, "expired", f"gave up after {attempts} attempts: {exc}", deps=deps
        )
    why = str(exc)[:2000]
    await ride_out(lambda: deps.log.retry_at(n.notification_id, due, why), what="delivery log")
    metrics.RETRIES_SCHEDULED.labels(channel=n.channel).inc()
    log.warning(
        "delivery failed, retrying at %s: %s",
        due.isoformat(),
        str(exc)[:300],
        extra={"notification_id": n.notification_id, "attempt": attempts},
    )
    return "retrying"


async def _final(n: Notification, status: str, detail: str | None, *, deps: Dependencies) -> str:
    """Publish the outcome, then log it with ``reported`` set: one write, not two.

    If the publish fails, the outcome is logged unreported (a replay or
    :func:`report_unreported` publishes it) and the error propagates. A crash between the
    send and this write leaves the row ``sending`` (sent again after the lease) or, for an
    email the crash policy does not send twice, ``handed`` (recorded ``unknown`` after the
    lease): see docs/decisions.md.
    """
    kept = detail[:2000] if detail else None
    metrics.NOTIFICATIONS.labels(channel=n.channel, outcome=status).inc()

    async def finish(reported: bool) -> None:
        # Sent already: the outcome must be logged, or the row stays ``sending`` and is
        # sent again after the lease. A database outage is waited out.
        await ride_out(
            lambda: deps.log.finish(n.notification_id, status, kept, reported=reported),
            what="delivery log",
        )

    try:
        await _report(n, status, detail, deps=deps)
    except Exception:
        await finish(False)
        raise
    await finish(True)
    return status


async def _dead(
    n: Notification, raw: bytes, reason: str, detail: str, *, deps: Dependencies
) -> str:
    """Give up: the record goes to the notifications dead-letter topic with the reason."""
    log.error(
        "delivery dead-lettered (%s): %s",
        reason,
        detail[:300],
        extra={"notification_id": n.notification_id},
    )
    record = Record(
        topic=topic_name(Topic.NOTIFICATIONS, deps.settings.common.topic_prefix),
        partition=-1,
        offset=-1,
        key=n.customer_id,
        value=raw,
        headers=(("dlq.reason", reason.encode()),),
        timestamp_ms=int(time.time() * 1000),
    )
    await deps.dead_letters.send(record, f"{reason}: {detail}")
    metrics.DEAD_LETTERS.labels(channel=n.channel, reason=reason).inc()
    return await _final(n, "dead", f"{reason}: {detail}", deps=deps)


async def _report(n: Notification, status: str, detail: str | None, *, deps: Dependencies) -> None:
    await deps.publisher.publish(
        Topic.DELIVERIES,
        n.customer_id,
        Delivery(
            notification_id=n.notification_id,
            customer_id=n.customer_id,
            journey_id=n.journey_id,
            playbook=n.playbook,
            step=n.step,
            channel=n.channel,
            status=REPORTED[status],
            occurred_at=deps.clock.now(),
            detail=detail[:500] if detail else None,
        ),
    )
