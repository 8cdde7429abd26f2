"""What a playbook step offers is what its message says (docs/domain.md section 7).

The figures are the step's ``offer`` block: the templates state ``offer.<field>``, the
notification carries the offer in ``context["offer"]``, and a template reading a field
its step does not define is an error naming it. Records of the schema before the offer
(no ``context.offer``) still render, and an older notifier still reads the new ones.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import ValidationError

from common.events import CustomerId, UtcDatetime
from common.messages import Message, Notification
from notifier.cli import SAMPLE
from notifier.domain import messages
from notifier.domain.render import Renderer, RenderError
from orchestrator.domain import decisions
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from tenure_cli import command as cli
from tenure_cli.offers import step_offers

BOOKS = load_playbooks(SHIPPED)
OFFERS = step_offers()
LINKS = messages.Links(
    offer_url="http://n/t/click/T",
    open_url="http://n/t/open/T",
    unsubscribe_url="http://n/u/U",
    app_url="http://app",
)
# Figures no shipped template writes: each must come from the offer to appear.
ODD = {
    "discount_pct": 37,
    "months": 13,
    "discount_months": 14,
    "upgrade_months": 15,
    "free_months": 16,
    "deadline_hours": 36,
    "premium_days": 19,
}
VARIANTS = [*BOOKS["retention_offer"].variants]


def notification(
    template: str, context: dict[str, Any], variant: str | None = None
) -> Notification:
    playbook, step = template.split("/")
    channel = Renderer().kind(template)
    return Notification(
        notification_id="n-1",
        customer_id="c-1",
        journey_id="j-1",
        playbook=playbook,
        step=step,
        channel=channel,
        template=template,
        variant=variant,
        recipient="ana@example.com" if channel == "email" else None,
        created_at=datetime(2026, 1, 5, 9, tzinfo=UTC),
        context={**SAMPLE, "first_name": "Ana", **context},
    )


def parts(n: Notification) -> list[str]:
    """Every part the customer reads: subject, text and HTML, or title and body."""
    renderer, context = Renderer(), messages.template_context(n, LINKS)
    if n.channel == "email":
        email = renderer.email(n.template, context)
        return [email.subject, email.text, email.html]
    message = renderer.in_app(n.template, context)
    return [message.title, message.body]


OFFER_STEPS = sorted(t for t, offer in OFFERS.items() if offer)


def test_the_shipped_offer_steps_are_the_ones_domain_names() -> None:
    assert OFFER_STEPS == [
        "course_upsell/last_chance",
        "cross_sell/bundle_offer",
        "re_engagement/premium_trial",
        "retention_offer/offer",
        "upsell_results/first_month_free",
        "upsell_usage/next_plan",
        "upsell_usage/next_plan_in_app",
        "win_back/offer",
    ]


@pytest.mark.parametrize("template", OFFER_STEPS)
def test_every_figure_a_step_states_is_its_offers(template: str) -> None:
    offer = {field: ODD[field] for field in OFFERS[template]}
    variants = VARIANTS if template == "retention_offer/offer" else [None]
    said = [
        part
        for variant in variants
        for part in parts(notification(template, {"offer": offer}, variant))
    ]
    text = "\n".join(said)
    for field, value in offer.items():
        assert re.search(rf"(?<![\d.]){value}(?![\d.])", text), (field, value)
    for field, shipped in OFFERS[template].items():  # none of the shipped figures is left
        if field == "discount_pct":
            assert f"{shipped}%" not in text
            assert "half price" not in text


def test_the_figure_is_in_the_subject_the_text_and_the_html() -> None:
    subject, text, html = parts(
        notification("cross_sell/bundle_offer", {"offer": {"discount_pct": 20}})
    )
    assert "20% off" in subject and "20% off" in text and "20% off" in html
    assert "30%" not in subject + text + html
    subject, text, html = parts(
        notification("win_back/offer", {"offer": {"discount_pct": 40, "months": 1}})
    )
    assert subject == "Ana, come back for 40% off for 1 month"
    assert "40% off for the first 1 month." in text and "Claim 40% off" in html


def test_a_missing_offer_field_is_an_error_naming_it() -> None:
    n = notification("cross_sell/bundle_offer", {"offer": {"pct": 30}})
    with pytest.raises(RenderError, match=r"reads offer\.discount_pct, which the notification"):
        parts(n)


def test_offer_fields_are_read_from_every_part_and_not_from_a_local_offer(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "s.subject.j2").write_text("{{ offer.pct }}% off")
    (tmp_path / "p" / "s.txt.j2").write_text("{% if variant %}{{ offer['days'] }}{% endif %}")
    (tmp_path / "p" / "s.html.j2").write_text('{% include "p/_part.j2" %}')
    (tmp_path / "p" / "_part.j2").write_text("{{ offer.hours }} h, {{ offer_url }}")
    (tmp_path / "p" / "t.txt.j2").write_text("{% set offer = steps | first %}{{ offer.status }}")
    renderer = Renderer(tmp_path)
    assert renderer.offer_fields("p/s") == {"pct", "days", "hours"}
    assert renderer.offer_fields("p/t") == frozenset()
    with pytest.raises(RenderError, match="no template"):
        renderer.offer_fields("p/nope")


# -- compatibility: records before the offer, notifiers before the offer --------------


def test_a_record_from_an_older_orchestrator_states_its_offer_keys() -> None:
    """Before ``context.offer`` the orchestrator sent ``offer_<field>`` keys."""
    n = notification("cross_sell/bundle_offer", {"offer_discount_pct": 25})
    assert n.offer == {"discount_pct": 25}
    assert all("25% off" in part for part in parts(n))


def test_a_notification_without_offer_renders_a_step_that_states_none() -> None:
    for template in ("onboarding/welcome", "upsell_need/plan_in_app"):
        assert parts(notification(template, {}))
    assert notification("onboarding/welcome", {}).offer == {}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_retention_offer_without_figures_says_it_without_them(variant: str) -> None:
    """retention_offer/offer had no offer block before: an older orchestrator's record
    carries no figure, and the email says the offer without one."""
    said = " ".join(parts(notification("retention_offer/offer", {}, variant)))
    assert "%" not in said.replace("100%", "")
    assert "Claim your offer" in said


class NotificationBeforeTheOffer(Message):
    """``Notification`` as an older notifier validates it: the fields before the offer,
    unknown fields forbidden (pinned here; do not update it with the model)."""

    notification_id: str
    customer_id: CustomerId
    journey_id: str
    playbook: str
    step: str
    channel: Literal["email", "in_app", "webhook"]
    template: str
    variant: str | None = None
    priority: Literal["normal", "high"] = "normal"
    recipient: str | None = None
    created_at: UtcDatetime
    context: dict[str, Any] = {}


def test_an_older_notifier_reads_a_record_with_the_offer() -> None:
    step = BOOKS["cross_sell"].step("bundle_offer")
    due = datetime(2026, 1, 5, 9, tzinfo=UTC)
    context = decisions.step_context({"first_name": "Ana"}, None, None, due, step)
    n = notification("cross_sell/bundle_offer", context)
    assert n.offer == {"discount_pct": 30}
    old = NotificationBeforeTheOffer.model_validate_json(n.model_dump_json())
    assert old.context["offer"] == {"discount_pct": 30} and old.schema_version == 1


def test_a_malformed_offer_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match=r"context\.offer must map names"):
        notification("cross_sell/bundle_offer", {"offer": {"discount_pct": [30]}})
    with pytest.raises(ValidationError, match=r"context\.offer must map names"):
        notification("cross_sell/bundle_offer", {"offer": 30})


# -- the command ---------------------------------------------------------------------


def playbooks_with(tmp_path: Path, old: str, new: str) -> Path:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    for path in SHIPPED.glob("*.yaml"):
        text = path.read_text()
        (folder / path.name).write_text(
            text.replace(old, new) if path.name == "cross_sell.yaml" else text
        )
    assert old in (SHIPPED / "cross_sell.yaml").read_text()
    return folder


def test_render_takes_the_playbooks_offer_and_the_option_over_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = playbooks_with(tmp_path, "offer: {discount_pct: 30}", "offer: {discount_pct: 25}")
    render = ["templates", "render", "cross_sell", "bundle_offer"]
    assert cli.main(render) == 0
    assert "Subject: Ana, 30% off the bundle" in capsys.readouterr().out
    assert cli.main([*render, "--playbooks", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "Subject: Ana, 25% off the bundle" in out and "the bundle is 25% off." in out
    assert cli.main([*render, "--playbooks", str(folder), "--offer", "discount_pct=15"]) == 0
    assert "Subject: Ana, 15% off the bundle" in capsys.readouterr().out
    assert cli.main([*render, "--offer", '{"discount_pct": 12.5}']) == 0
    assert "12.5% off" in capsys.readouterr().out


def test_check_reports_a_template_reading_an_offer_field_its_step_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = playbooks_with(tmp_path, "offer: {discount_pct: 30}", "offer: {pct: 30}")
    assert cli.main(["templates", "check", "--playbooks", str(folder)]) == 1
    captured = capsys.readouterr()
    assert "34 templates render, 1 fail" in captured.out
    [error] = captured.err.splitlines()
    assert error.startswith("cross_sell/bundle_offer: ") and "offer.discount_pct" in error
