"""``tenure templates``: list, check and preview the notifier's message templates;
``tenure inbox token``: issue an in-app inbox token for a customer.

``tenure templates render PLAYBOOK STEP --customer SPEC`` prints what a customer would
get from that step: subject, text and HTML of an email, title and body of an in-app
message, or the text and JSON body of a CSM webhook. ``SPEC`` is a JSON object, the path
of a JSON file, or ``key=value`` pairs separated by commas; unspecified fields come from
a sample customer. Links are placeholders (nothing is signed or tracked). The step's
offer figures (``offer.*``) are the playbook step's ``offer`` block (from ``--playbooks``,
the shipped folder by default), each overridden by ``--offer SPEC`` (same forms).

``tenure templates check`` renders every template with the sample customer and the offer
of the playbook step that uses it; a template reading an ``offer`` field its step does
not define fails, naming the field.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from common.cli import CliError
from common.messages import OFFER_KEY, Channel, Notification, OfferValue
from notifier.domain import messages
from notifier.domain.render import TEMPLATES, Renderer, RenderError
from notifier.domain.signing import issue_inbox_token
from notifier.settings import InboxTokenSettings

SAMPLE: dict[str, Any] = {
    "first_name": "Ana",
    "email": "ana@example.com",
    "plan": "basic",
    "owner_csm": "csm@example.com",
    "variant": None,
    "day": 0,
    "due_at": "2026-01-05T09:00:00+00:00",
    "score": {
        "churn_probability": 0.91,
        "tier": "high",
        "risk_score": 63.3,
        "signals": [
            {
                "name": "competitor_trial",
                "group": "competition",
                "value": 1,
                "threshold": 1,
                "contribution": 12.9,
            }
        ],
        "red_flags": [],
    },
}
PREVIEW = "http://127.0.0.1:8082"
PREVIEW_LINKS = messages.Links(
    offer_url=f"{PREVIEW}/t/click/preview",
    open_url=f"{PREVIEW}/t/open/preview",
    unsubscribe_url=f"{PREVIEW}/u/preview",
    app_url="https://app.tenure.example",
)


OfferSource = Callable[[Path | None], Mapping[str, Mapping[str, OfferValue]]]
"""The offers of a playbook folder (None: the shipped one) by template
(``"cross_sell/bundle_offer"``); raises :class:`CliError` for a folder it cannot read.
Given by the ``tenure`` command, which reads the playbooks as the orchestrator does."""


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")


def parse_customer(spec: str | None) -> dict[str, Any]:
    """The sample customer overridden by ``spec`` (JSON, a JSON file, or k=v,k=v)."""
    if not spec:
        return dict(SAMPLE)
    return {**SAMPLE, **_parse_spec(spec, "--customer")}


def parse_offer(spec: str) -> dict[str, OfferValue]:
    """``--offer``: JSON, a JSON file, or k=v,k=v (a value that reads as a number is one)."""
    offer: dict[str, OfferValue] = {}
    for key, value in _parse_spec(spec, "--offer").items():
        if isinstance(value, str):
            offer[key] = _number(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            offer[key] = value
        else:
            raise CliError(f"--offer: {key} must be a string or a number, got {value!r}")
    return offer


def _number(text: str) -> OfferValue:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _parse_spec(spec: str, option: str) -> dict[str, Any]:
    text = spec.strip()
    if not text.startswith("{") and Path(text).is_file():
        text = Path(text).read_text()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"{option}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CliError(f"{option}: must be a JSON object")
        return data
    fields: dict[str, Any] = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"{option}: expected key=value, got {pair!r}")
        fields[key.strip()] = value.strip()
    return fields


def preview(
    renderer: Renderer,
    playbook: str,
    step: str,
    customer: dict[str, Any],
    offer: Mapping[str, OfferValue] | None = None,
) -> str:
    """The rendered step for ``customer`` with ``offer``, as text; raises :class:`RenderError`."""
    template = f"{playbook}/{step}"
    kind = renderer.kind(template)
    channel: Channel = kind
    n = Notification(
        notification_id="preview",
        customer_id=str(customer.get("customer_id", "preview-customer")),
        journey_id="preview",
        playbook=playbook,
        step=step,
        channel=channel,
        template=template,
        variant=customer.get("variant"),
        recipient=customer.get("email") if channel == "email" else "csm",
        created_at="2026-01-05T09:00:00Z",  # type: ignore[arg-type]
        context={
            **{k: v for k, v in customer.items() if k != "customer_id"},
            OFFER_KEY: dict(offer or {}),
        },
    )
    context = messages.template_context(n, PREVIEW_LINKS)
    if kind == "email":
        email = renderer.email(template, context)
        headers = messages.email_headers(n, PREVIEW_LINKS.unsubscribe_url)
        head = "\n".join(f"{k}: {v}" for k, v in headers.items())
        return (
            f"To: {n.recipient}\nSubject: {email.subject}\n{head}\n\n"
            f"--- text/plain ---\n{email.text}\n\n--- text/html ---\n{email.html}"
        )
    if kind == "in_app":
        message = renderer.in_app(template, context)
        return f"Title: {message.title}\n\n{message.body}"
    title = renderer.text(template, context)
    body = messages.csm_task_body(n, title)
    return (
        f"{title}\n\n--- webhook body ---\n"
        + orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
    )


def _offers(
    args: argparse.Namespace, source: OfferSource | None
) -> Mapping[str, Mapping[str, OfferValue]]:
    return {} if source is None else source(args.playbooks)


def cmd_render(args: argparse.Namespace, source: OfferSource | None = None) -> int:
    renderer = Renderer(args.templates)
    customer = parse_customer(args.customer)
    if args.variant is not None:
        customer["variant"] = args.variant
    offer = dict(_offers(args, source).get(f"{args.playbook}/{args.step}", {}))
    if args.offer:
        offer.update(parse_offer(args.offer))
    try:
        _write(preview(renderer, args.playbook, args.step, customer, offer))
    except RenderError as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    renderer = Renderer(args.templates)
    for template in renderer.templates():
        _write(f"{template}\t{renderer.kind(template)}")
    return 0


def cmd_check(args: argparse.Namespace, source: OfferSource | None = None) -> int:
    renderer = Renderer(args.templates)
    offers = _offers(args, source)
    failures = 0
    for template in renderer.templates():
        playbook, step = template.split("/")
        try:
            preview(renderer, playbook, step, dict(SAMPLE), offers.get(template))
        except RenderError as exc:
            failures += 1
            sys.stderr.write(f"{template}: {exc}\n")
    _write(f"{len(renderer.templates()) - failures} templates render, {failures} fail")
    return 1 if failures else 0


def register_templates(parser: argparse.ArgumentParser, offers: OfferSource | None = None) -> None:
    """List, check and preview the notifier's message templates.

    With ``offers``, ``render`` and ``check`` take ``--playbooks DIR`` and render each
    step with its playbook step's offer; without, ``render`` with ``--offer`` alone.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--templates", type=Path, default=TEMPLATES, metavar="DIR", help="template folder"
    )
    books = argparse.ArgumentParser(add_help=False)
    if offers is not None:
        books.add_argument(
            "--playbooks",
            type=Path,
            default=None,
            metavar="DIR",
            help="playbook folder whose steps' offers the templates get (default: shipped)",
        )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    render = actions.add_parser(
        "render", parents=[common, books], help="print a step as a customer would get it"
    )
    render.add_argument("playbook", metavar="PLAYBOOK")
    render.add_argument("step", metavar="STEP")
    render.add_argument(
        "--customer",
        metavar="SPEC",
        help="JSON object, JSON file, or key=value,... (default: a sample customer)",
    )
    render.add_argument("--variant", help="offer variant (retention_offer)")
    render.add_argument(
        "--offer",
        metavar="SPEC",
        help="offer figures over the playbook step's: JSON object, JSON file, or "
        "key=value,... (e.g. discount_pct=20)",
    )
    render.set_defaults(run=lambda args: cmd_render(args, offers))
    listing = actions.add_parser("list", parents=[common], help="every step with templates")
    listing.set_defaults(run=cmd_list)
    check = actions.add_parser(
        "check",
        parents=[common, books],
        help="render every template with the sample customer and its playbook step's offer",
    )
    check.set_defaults(run=lambda args: cmd_check(args, offers))


def cmd_inbox_token(args: argparse.Namespace) -> int:
    try:
        settings = InboxTokenSettings()
        key = settings.inbox_key()
    except (ValidationError, ValueError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    ttl = settings.inbox_token_ttl_s if args.ttl is None else args.ttl
    if not 1 <= ttl <= settings.inbox_token_max_ttl_s:
        raise CliError(
            f"--ttl must be between 1 and {settings.inbox_token_max_ttl_s} seconds "
            "(TENURE_NOTIFIER_INBOX_TOKEN_MAX_TTL_S: the API refuses longer-lived tokens)"
        )
    if not args.customer.strip():
        raise CliError("--customer must not be empty")
    _write(issue_inbox_token(args.customer, int(time.time()) + ttl, key))
    return 0


def register_inbox(parser: argparse.ArgumentParser) -> None:
    """Issue in-app inbox tokens (as the product backend does) for operators and tests."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    token = actions.add_parser(
        "token",
        help="print a signed inbox token for a customer (key from TENURE_NOTIFIER_INBOX_SECRET, "
        "else derived from TENURE_NOTIFIER_LINK_SECRET)",
    )
    token.add_argument("--customer", required=True, metavar="ID", help="the customer id")
    token.add_argument(
        "--ttl",
        type=int,
        metavar="S",
        help="seconds until it expires (default TENURE_NOTIFIER_INBOX_TOKEN_TTL_S, 3600)",
    )
    token.set_defaults(run=cmd_inbox_token)
