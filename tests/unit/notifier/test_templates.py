"""Every step of every playbook (docs/domain.md section 7) has templates, and they render."""

from __future__ import annotations

import pytest

from notifier.cli import SAMPLE, parse_customer, preview
from notifier.domain.render import Renderer, RenderError
from tenure_cli import command as cli
from tenure_cli.offers import step_offers

OFFERS = step_offers()  # the shipped playbooks' offers, by template

# The contract table (docs: contract 5): playbook -> step -> channel.
STEPS = {
    "re_engagement": {"summary": "email", "premium_trial": "in_app", "csm_help": "webhook"},
    "success_coaching": {
        "coaching_guide": "email",
        "training_invite": "webhook",
        "follow_up": "email",
    },
    "retention_offer": {"offer": "email", "retention_call": "webhook", "escalation": "webhook"},
    "win_back": {
        "we_miss_you": "email",
        "offer": "email",
        "personal_call": "webhook",
        "last_chance": "email",
    },
    "upsell_usage": {"next_plan_in_app": "in_app", "next_plan": "email"},
    "upsell_need": {"plan_in_app": "in_app", "plan_email": "email"},
    "upsell_results": {"first_month_free": "email"},
    "cross_sell": {"bundle_offer": "email"},
    "onboarding": {
        "welcome": "email",
        "first_success": "email",
        "check_in": "email",
        "results": "email",
        "growth_plan": "email",
    },
    "course_upsell": {
        "advantage": "email",
        "roi": "email",
        "last_chance": "email",
        "success_stories": "email",
        "final_reminder": "email",
    },
    "saas_upsell": {
        "pro_features": "email",
        "pro_roi": "email",
        "pro_offer": "email",
        "pro_last_call": "email",
    },
    "downgrade_save": {"value_in_app": "in_app", "value_email": "email"},
}
ALL = [(p, s, c) for p, steps in STEPS.items() for s, c in steps.items()]
LINKS = {
    "offer_url": "http://n/t/click/TOKEN",
    "open_url": "http://n/t/open/TOKEN",
    "unsubscribe_url": "http://n/u/UNSUB",
    "app_url": "http://app",
}


def test_the_template_folder_has_exactly_the_contract_steps() -> None:
    assert Renderer().templates() == sorted(f"{p}/{s}" for p, s, _ in ALL)


@pytest.mark.parametrize(("playbook", "step", "channel"), ALL)
def test_every_step_renders_personalised(playbook: str, step: str, channel: str) -> None:
    renderer = Renderer()
    template = f"{playbook}/{step}"
    assert renderer.kind(template) == channel
    context = {
        **SAMPLE,
        "first_name": "Zoë",
        "plan": "basic",
        "customer_id": "c-9",
        "offer": OFFERS.get(template, {}),
        **LINKS,
    }
    if channel == "email":
        email = renderer.email(template, context)
        assert email.subject and "\n" not in email.subject
        for part in (email.text, email.html):
            assert "Zoë" in part or "Zoë" in email.subject
            assert LINKS["offer_url"] in part
            assert LINKS["unsubscribe_url"] in part
        assert LINKS["open_url"] in email.html
        assert email.html.lstrip().startswith("<!doctype html>")
        assert "{{" not in email.text + email.html + email.subject
    elif channel == "in_app":
        message = renderer.in_app(template, context)
        assert message.title and message.body and "{{" not in message.body
    else:
        text = renderer.text(template, context)
        assert "c-9" in text or "Zoë" in text


@pytest.mark.parametrize(("playbook", "step", "channel"), [a for a in ALL if a[2] == "email"])
def test_a_missing_customer_field_is_an_error_not_a_blank(
    playbook: str, step: str, channel: str
) -> None:
    context = {**SAMPLE, **LINKS, "offer": OFFERS.get(f"{playbook}/{step}", {})}
    del context["first_name"]
    with pytest.raises(RenderError, match="first_name"):
        Renderer().email(f"{playbook}/{step}", context)


def test_no_first_name_falls_back_politely() -> None:
    email = Renderer().email("onboarding/welcome", {**SAMPLE, "first_name": None, **LINKS})
    assert "None" not in email.subject + email.text
    assert "Hi there," in email.text


def test_broken_template_is_a_render_error(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "p").mkdir()
    (folder / "p" / "s.txt.j2").write_text("{% if %}")
    with pytest.raises(RenderError, match=r"p/s\.txt\.j2: TemplateSyntaxError"):
        Renderer(folder).text("p/s", {})


def test_cli_renders_a_step_for_a_customer(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(
        [
            "templates",
            "render",
            "win_back",
            "offer",
            "--customer",
            '{"first_name": "Luis", "email": "luis@example.com"}',
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "Subject: Luis, come back for 50% off for 3 months" in out
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in out
    assert "--- text/html ---" in out and "To: luis@example.com" in out


def test_cli_names_an_unknown_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["templates", "render", "win_back", "nope"]) == 1
    assert "no template 'win_back/nope'" in capsys.readouterr().err


def test_cli_check_renders_everything(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["templates", "check"]) == 0
    assert f"{len(ALL)} templates render, 0 fail" in capsys.readouterr().out


def test_customer_spec_forms() -> None:
    assert parse_customer("first_name=Ana, plan=pro")["plan"] == "pro"
    assert parse_customer('{"plan": "free"}')["plan"] == "free"
    with pytest.raises(Exception, match="key=value"):
        parse_customer("nonsense")


def test_webhook_preview_carries_the_explanation() -> None:
    out = preview(Renderer(), "win_back", "personal_call", dict(SAMPLE))
    assert '"explanation"' in out and "competitor_trial" in out
