"""Deliver notifications once in effect; retry, dead-letter and report every outcome.

Two ways in: :meth:`Deliverer.handle` for a record consumed from ``notifications``, and
:meth:`Deliverer.retry_due` for attempts the delivery log says are due again (on the
shared clock) or were left half-done by a worker that died. Both end in
:meth:`Deliverer.attempt`, where a notification is sent, suppressed, bounced, scheduled
again (a transient failure, with backoff, for at most ``retry_max_age_s``) or dead-lettered
with its reason (a broken template, a missing field, a permanent refusal, or retries
exhausted). Every final outcome is published on ``deliveries`` and counted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

import orjson

from common.clock import Clock
from common.kafka import (
    INVALID,
    Consumer,
    DeadLetters,
    KeyedParallel,
    Publisher,
    Record,
    run_consumer,
)
from common.messages import Delivery, Notification
from common.outage import DatabaseUnavailable, ride_out
from common.runtime import sleep_or_stop
from common.topics import Topic, topic_name
from notifier import metrics
from notifier.adapters.delivery_log import DeliveryLog
from notifier.adapters.inbox import Inbox
from notifier.adapters.mailer import Bounced, Mailer, PermanentSendError, SendError
from notifier.adapters.suppressions import Suppressions
from notifier.adapters.webhooks import WebhookSender
from notifier.domain import messages
from notifier.domain.render import Renderer, RenderError
from notifier.domain.retry import RetryPolicy
from notifier.links import Links
from notifier.settings import NotifierSettings, WebhookEndpoint

log = logging.getLogger(__name__)

# Outcome in the log -> status on the deliveries topic.
REPORTED = {
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


def retry_policy(settings: NotifierSettings) -> RetryPolicy:
    return RetryPolicy(
        base=timedelta(seconds=settings.retry_base_s),
        cap=timedelta(seconds=settings.retry_cap_s),
        jitter=settings.retry_jitter,
        max_age=timedelta(seconds=settings.retry_max_age_s),
    )


class Unchecked:
    """The suppression list was not read with the claim (a retry): read it when sending."""


UNCHECKED = Unchecked()


class Suppressed(Exception):
    """Not sent on purpose (suppression list or withheld consent); the message says why."""


@dataclass(frozen=True)
class Deliverer:
    settings: NotifierSettings
    log: DeliveryLog
    mailer: Mailer
    webhooks: WebhookSender
    renderer: Renderer
    publisher: Publisher
    clock: Clock
    suppressions: Suppressions
    inbox: Inbox
    dead_letters: DeadLetters
    uniform: Callable[[], float] = field(default=random.random)

    # Built once from the (frozen) settings, not for every message.
    @cached_property
    def links(self) -> Links:
        return Links(self.settings)

    @cached_property
    def policy(self) -> RetryPolicy:
        return retry_policy(self.settings)

    @cached_property
    def routes(self) -> dict[str, WebhookEndpoint]:
        return self.settings.routes()

    @cached_property
    def message_domain(self) -> str:
        return self.settings.message_domain()

    @cached_property
    def handover(self) -> asyncio.Semaphore:
        """Emails marked ``handed`` and waiting for (or using) an SMTP connection: twice
        the pool, so that a connection that frees up finds the next email already
        marked (the mark's commit overlaps the sends), and a crash leaves at most this
        many ``unknown``, not every notification in flight."""
        return asyncio.Semaphore(2 * self.settings.smtp_pool_size)

    def resent_after_crash(self, n: Notification) -> bool:
        """Whether ``n``, found in flight after its worker died, is sent again; if not, it
        is marked ``handed`` before it goes to the mail server (docs/decisions.md)."""
        if n.channel != "email":
            return True  # webhook-id and the inbox's notification id de-duplicate
        policy = self.settings.email_resend_after_crash
        return policy == "always" or (policy == "transactional" and not messages.is_marketing(n))

    # -- entry points ---------------------------------------------------------------
    async def handle(self, record: Record) -> None:
        """Deliver one record of ``notifications`` unless its id was seen before.

        Raises a decode error (-> the consumer's dead-letter topic) for a record that is
        not a valid notification; a Kafka or database outage propagates (retried by the
        consumer loop, offsets uncommitted).
        """
        n = Notification.model_validate_json(record.value)
        now = self.clock.now()
        check = n.channel == "email" and bool(n.recipient) and messages.is_marketing(n)
        claimed = await self.log.claim(
            notification_id=n.notification_id,
            customer_id=n.customer_id,
            channel=n.channel,
            payload=record.value,
            now=now,
            address=n.recipient if check else None,
        )
        existing = claimed.existing
        if existing is not None:
            metrics.NOTIFICATIONS.labels(channel=n.channel, outcome="duplicate").inc()
            if existing.status in REPORTED and not existing.reported:
                # The outcome was logged but never reached Kafka (a publish failed).
                await self._report(n, existing.status, existing.detail)
                await self.log.mark_reported(n.notification_id)
            return
        await self.attempt(
            n, attempts=1, first_attempt_at=now, raw=record.value, suppressed=claimed.suppressed
        )

    async def retry_due(self) -> int:
        """Attempt every notification due again now; how many were attempted."""
        claims = await self.log.claim_due(
            now=self.clock.now(),
            limit=self.settings.retry_batch,
            lease=timedelta(seconds=self.settings.sending_lease_s),
        )
        for claim in claims:
            try:
                n = Notification.model_validate_json(claim.payload)
            except INVALID as exc:  # a payload stored by an older release
                await self.log.finish(claim.notification_id, "dead", f"undecodable: {exc}")
                continue
            if claim.previous == "handed" and not self.resent_after_crash(n):
                metrics.TAKEN_OVER.labels(channel=n.channel, outcome="unknown").inc()
                log.warning(
                    "email in flight at a crash recorded unknown, not sent again",
                    extra={"notification_id": n.notification_id},
                )
                await self._final(n, "unknown", UNKNOWN_DETAIL)
                continue
            if claim.previous != "retrying":
                metrics.TAKEN_OVER.labels(channel=n.channel, outcome="resent").inc()
            await self.attempt(
                n,
                attempts=claim.attempts,
                first_attempt_at=claim.first_attempt_at,
                raw=claim.payload,
            )
        return len(claims)

    async def report_unreported(self) -> int:
        """Publish outcomes logged but never published (a publish that failed), once their
        row has been quiet for the sending lease; how many were published."""
        rows = await self.log.unreported(
            limit=self.settings.retry_batch,
            quiet=timedelta(seconds=self.settings.sending_lease_s),
        )
        for row in rows:
            n = Notification.model_validate_json(row.payload)
            await self._report(n, row.status, row.detail)
            await self.log.mark_reported(n.notification_id)
        return len(rows)

    # -- one attempt ----------------------------------------------------------------
    async def attempt(
        self,
        n: Notification,
        *,
        attempts: int,
        first_attempt_at: datetime,
        raw: bytes,
        suppressed: str | Unchecked | None = UNCHECKED,
    ) -> str:
        """Try ``n`` once; the status the log now holds for it.

        ``suppressed`` is the address's suppression as read with the claim, if it was.
        """
        started = time.perf_counter()
        try:
            # The database is read (suppressions) or written (the in-app inbox, which is
            # idempotent) before or as the send: an outage there sent nothing yet.
            await ride_out(lambda: self._send(n, suppressed), what="delivery")
        except Suppressed as exc:
            return await self._final(n, "suppressed", str(exc))
        except Bounced as exc:
            metrics.ATTEMPT_FAILURES.labels(channel=n.channel, kind="permanent").inc()
            metrics.send_failed(n.channel, exc)
            return await self._final(n, "bounced", str(exc))
        except (RenderError, messages.NoRoute) as exc:
            metrics.ATTEMPT_FAILURES.labels(channel=n.channel, kind="render").inc()
            return await self._dead(n, raw, "render", str(exc))
        except PermanentSendError as exc:
            metrics.ATTEMPT_FAILURES.labels(channel=n.channel, kind="permanent").inc()
            metrics.send_failed(n.channel, exc)
            return await self._dead(n, raw, "permanent", str(exc))
        except SendError as exc:
            metrics.ATTEMPT_FAILURES.labels(channel=n.channel, kind="transient").inc()
            metrics.send_failed(n.channel, exc)
            due = self.policy.next_attempt(
                first_attempt_at=first_attempt_at,
                now=self.clock.now(),
                failed_attempts=attempts,
                u=self.uniform(),
            )
            if due is None:
                return await self._dead(
                    n, raw, "expired", f"gave up after {attempts} attempts: {exc}"
                )
            why = str(exc)[:2000]
            await ride_out(
                lambda: self.log.retry_at(n.notification_id, due, why), what="delivery log"
            )
            metrics.RETRIES_SCHEDULED.labels(channel=n.channel).inc()
            log.warning(
                "delivery failed, retrying at %s: %s",
                due.isoformat(),
                str(exc)[:300],
                extra={"notification_id": n.notification_id, "attempt": attempts},
            )
            return "retrying"
        metrics.SEND_SECONDS.labels(channel=n.channel).observe(time.perf_counter() - started)
        return await self._final(n, "sent", None)

    async def _send(self, n: Notification, suppressed: str | Unchecked | None) -> None:
        links = self.links.for_notification(n)
        context = messages.template_context(n, links)
        if n.channel == "email":
            if not n.recipient:
                raise PermanentSendError("no email address")
            if messages.is_marketing(n):
                if messages.withheld_consent(n, "email_marketing"):
                    raise Suppressed("no email-marketing consent")
                reason = (
                    await self.suppressions.reason(n.recipient)
                    if isinstance(suppressed, Unchecked)
                    else suppressed
                )
                if reason is not None:
                    raise Suppressed(f"address suppressed: {reason}")
            email = self.renderer.email(n.template, context)
            headers = messages.email_headers(
                n, links.unsubscribe_url, links.reply_to, message_id_domain=self.message_domain
            )
            if self.resent_after_crash(n):
                await self.mailer.send(to=n.recipient, email=email, headers=headers)
            else:
                async with self.handover:
                    await self.log.handed(n.notification_id)
                    await self.mailer.send(to=n.recipient, email=email, headers=headers)
        elif n.channel == "in_app":
            if messages.is_marketing(n) and messages.withheld_consent(n, "in_app"):
                raise Suppressed("no in-app consent")
            message = self.renderer.in_app(n.template, context)
            await self.inbox.store(
                notification_id=n.notification_id,
                customer_id=n.customer_id,
                journey_id=n.journey_id,
                playbook=n.playbook,
                step=n.step,
                title=message.title,
                body=message.body,
                created_at=self.clock.now(),
            )
        else:
            routes = self.routes
            endpoint = routes[messages.route_for(n, routes)]
            title = self.renderer.text(n.template, context)
            body = orjson.dumps(messages.csm_task_body(n, title, endpoint.format))
            await self.webhooks.post(endpoint.url, msg_id=n.notification_id, body=body)

    async def _final(self, n: Notification, status: str, detail: str | None) -> str:
        """Publish the outcome, then log it with ``reported`` set: one write, not two.

        If the publish fails, the outcome is logged unreported (a replay re-publishes it)
        and the error propagates. A crash between the send and this write leaves the row
        ``sending`` (sent again after the lease) or, for an email the crash policy does
        not send twice, ``handed`` (recorded ``unknown`` after the lease): see
        :meth:`resent_after_crash` and docs/decisions.md.
        """
        kept = detail[:2000] if detail else None
        metrics.NOTIFICATIONS.labels(channel=n.channel, outcome=status).inc()

        async def finish(reported: bool) -> None:
            # Sent already: the outcome must be logged, or the row stays ``sending`` and
            # is sent again after the lease. A database outage is waited out.
            await ride_out(
                lambda: self.log.finish(n.notification_id, status, kept, reported=reported),
                what="delivery log",
            )

        try:
            await self._report(n, status, detail)
        except Exception:
            await finish(False)
            raise
        await finish(True)
        return status

    async def _dead(self, n: Notification, raw: bytes, reason: str, detail: str) -> str:
        """Give up: the record goes to the notifications dead-letter topic with the reason."""
        log.error(
            "delivery dead-lettered (%s): %s",
            reason,
            detail[:300],
            extra={"notification_id": n.notification_id},
        )
        record = Record(
            topic=topic_name(Topic.NOTIFICATIONS, self.settings.common.topic_prefix),
            partition=-1,
            offset=-1,
            key=n.customer_id,
            value=raw,
            headers=(("dlq.reason", reason.encode()),),
            timestamp_ms=int(time.time() * 1000),
        )
        await self.dead_letters.send(record, f"{reason}: {detail}")
        metrics.DEAD_LETTERS.labels(channel=n.channel, reason=reason).inc()
        return await self._final(n, "dead", f"{reason}: {detail}")

    async def _report(self, n: Notification, status: str, detail: str | None) -> None:
        await self.publisher.publish(
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
                occurred_at=self.clock.now(),
                detail=detail[:500] if detail else None,
            ),
        )


async def consume(consumer: Consumer, deliverer: Deliverer, *, stop: asyncio.Event) -> None:
    """Deliver the records of ``notifications`` until ``stop``, with the shared runner's
    keyed-parallel strategy: customers in parallel, up to ``delivery_concurrency``
    notifications in flight, one customer's in order. At-least-once; the delivery log
    makes a replay send nothing twice. See :func:`common.kafka.run_consumer`."""
    await run_consumer(
        consumer,
        deliverer.handle,
        deliverer.dead_letters,
        stop=stop,
        name="notifier consumer",
        strategy=KeyedParallel(concurrency=deliverer.settings.delivery_concurrency),
        report_lag=metrics.report_lag,
        lag_every_s=deliverer.settings.common.metrics_every_s,
    )


async def retry_loop(deliverer: Deliverer, *, stop: asyncio.Event) -> None:
    """Poll the retry schedule every ``retry_poll_s`` real seconds until ``stop``; a
    database outage is waited out."""

    async def poll() -> int:
        attempted = await deliverer.retry_due()
        await deliverer.report_unreported()
        return attempted

    while not stop.is_set():
        try:
            attempted = await ride_out(poll, what="retry worker", stop=stop)
        except DatabaseUnavailable:
            break  # stopping during an outage
        except Exception:
            log.exception("retry poll failed")
            attempted = 0
        if attempted < deliverer.settings.retry_batch:
            await sleep_or_stop(stop, deliverer.settings.retry_poll_s)
