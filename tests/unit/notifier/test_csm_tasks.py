"""What a CSM task says about its journey (issue 13, item 2): what was sent, when, what is
pending, in the task's text (its template) and in its JSON body, standard and Slack."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from common.messages import Notification
from notifier.cli import SAMPLE
from notifier.domain.messages import csm_task_body
from notifier.domain.render import Renderer

T0 = datetime(2026, 6, 8, 10, 0, tzinfo=UTC)


def entry(step: str, channel: str, status: str, at: str | None, reason: str | None = None):
    return {"step": step, "channel": channel, "status": status, "at": at, "reason": reason}


def journey(*steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "playbook": "retention_offer",
        "started_at": "2026-06-03T10:00:00+00:00",
        "steps": list(steps),
        "sent": [s["step"] for s in steps if s["status"] in ("sent", "queued")],
        "not_sent": [s["step"] for s in steps if s["status"] in ("not_sent", "skipped")],
        "pending": [s["step"] for s in steps if s["status"] == "pending"],
    }


SENT = entry("offer", "email", "sent", "2026-06-08T10:20:00+00:00")
SKIPPED = entry("offer", "email", "skipped", "2026-06-03T10:00:00+00:00", "no email consent")
PENDING = entry("escalation", "webhook", "pending", "2026-06-11T10:00:00+00:00")


def call(story: dict[str, Any] | None, step: str = "retention_call") -> Notification:
    context = {**SAMPLE, "variant": "discount_30_3_months"}
    if story is not None:
        context["journey"] = story
    return Notification(
        notification_id="n-1",
        customer_id="c-9",
        journey_id="j-1",
        playbook="retention_offer",
        step=step,
        channel="webhook",
        template=f"retention_offer/{step}",
        recipient="csm",
        priority="high",
        created_at=T0,
        context=context,
    )


def text(n: Notification) -> str:
    return Renderer().text(n.template, {**n.context, "customer_id": n.customer_id})


def test_the_call_says_when_the_offer_was_sent_and_what_is_pending() -> None:
    said = text(call(journey(SENT, PENDING)))
    assert (
        "Call today about the retention offer (discount_30_3_months), sent 2026-06-08 10:20 UTC"
        in said
    )
    assert "Still pending: the escalation, due 2026-06-11 10:00 UTC" in said
    said = text(call(journey(SKIPPED, PENDING)))
    assert "the retention offer was not sent (no email consent)" in said
    assert "sent 2026" not in said
    # a notification made before the journey was in the context claims nothing
    assert "offer sent" not in text(call(None))


def test_the_escalation_says_the_offer_went_unanswered_since_it_was_sent() -> None:
    said = text(call(journey(SENT), step="escalation"))
    assert "has not responded to the retention offer, sent 2026-06-08 10:20 UTC" in said
    assert "Journey so far: offer (email) sent 2026-06-08 10:20 UTC." in said
    said = text(call(journey(SKIPPED), step="escalation"))
    assert "the retention offer to Ana (c-9) was not sent (no email consent)" in said


def test_the_task_body_carries_the_journey_and_slack_shows_it() -> None:
    story = journey(SENT, PENDING)
    standard = csm_task_body(call(story), "Retention call")
    assert standard["journey"] == story
    slack = csm_task_body(call(story), "Retention call", "slack")
    [why, so_far] = slack["blocks"][2]["elements"]
    assert why["text"].startswith("Why: competitor_trial")
    assert so_far["text"] == (
        "So far: offer (email) sent 2026-06-08 10:20 UTC; "
        "escalation (webhook) due 2026-06-11 10:00 UTC"
    )
    assert csm_task_body(call(None), "t")["journey"] is None
    assert len(csm_task_body(call(None), "t", "slack")["blocks"][2]["elements"]) == 1


def test_the_win_back_call_dates_its_journey_rather_than_a_fixed_delay() -> None:
    story = {**journey(), "playbook": "win_back"}
    n = call(story, step="personal_call").model_copy(
        update={"playbook": "win_back", "template": "win_back/personal_call"}
    )
    assert "(c-9) cancelled and has not come back (win-back journey since 2026-06-03)." in text(n)
    # without its journey the task names no date (it used to say "45 days ago" whatever
    # the playbook's timing)
    bare = n.model_copy(update={"context": {k: v for k, v in n.context.items() if k != "journey"}})
    assert "(c-9) cancelled and has not come back. Call" in text(bare)
