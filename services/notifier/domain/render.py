"""Rendering messages from Jinja2 templates (pure: template folder in, text out).

Templates live in ``templates/<playbook>/<step>.*``: ``.subject.j2``, ``.txt.j2`` and
``.html.j2`` for an email, ``.in_app.j2`` for an in-app message (first line the title,
the rest the body), ``.txt.j2`` alone for a CSM webhook's text. HTML is autoescaped.
A field the template needs and the context lacks is an error (``StrictUndefined``).

Offer figures come from ``offer``, the step's playbook ``offer`` block
(``{{ offer.discount_pct }}%``). :meth:`Renderer.offer_fields` reads from the templates
which fields a step's messages state, so that a playbook step lacking one is reported when
the playbooks are validated; a notification lacking one it needs fails naming the field.
A template may say what it shows without a figure (``{% if offer.x is defined %}``); the
step must define the field all the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    UndefinedError,
    meta,
    nodes,
    select_autoescape,
)

from common.messages import OFFER_KEY
from notifier.errors import NotifierError

TEMPLATES = Path(__file__).parent.parent / "templates"

TemplateKind = Literal["email", "in_app", "webhook"]
PARTS: dict[TemplateKind, tuple[str, ...]] = {
    "email": ("subject", "txt", "html"),
    "in_app": ("in_app",),
    "webhook": ("txt",),
}
_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")


class RenderError(NotifierError):
    """A template is missing, broken, or needs a field the notification lacks."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class RenderedInApp:
    title: str
    body: str


class Renderer:
    def __init__(self, folder: Path = TEMPLATES) -> None:
        self.folder = folder
        self.loader = FileSystemLoader(folder)
        self.env = Environment(
            loader=self.loader,
            autoescape=select_autoescape(["html", "html.j2"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self._offer_fields: dict[str, frozenset[str]] = {}

    def offer_fields(self, template: str) -> frozenset[str]:
        """The ``offer.<name>`` fields the step ``<playbook>/<step>``'s messages read
        (every part, and the templates they extend or include); raises :class:`RenderError`.

        Read from the templates' syntax tree, not by rendering: a field read in one
        branch only (one variant's wording) counts. A template that assigns ``offer``
        itself (``{% set offer = ... %}``) reads its own variable, not the step's offer.
        """
        if template not in self._offer_fields:
            names = [f"{template}.{part}.j2" for part in PARTS[self.kind(template)]]
            fields: set[str] = set()
            seen: set[str] = set()
            while names:
                name = names.pop()
                if name in seen:
                    continue
                seen.add(name)
                try:
                    source = self.loader.get_source(self.env, name)[0]
                    tree = self.env.parse(source, name)
                except Exception as exc:  # jinja2 raises many kinds; all mean the same here
                    raise RenderError(f"{name}: {type(exc).__name__}: {exc}") from exc
                fields |= _offer_reads(tree)
                names += [n for n in meta.find_referenced_templates(tree) if n is not None]
            self._offer_fields[template] = frozenset(fields)
        return self._offer_fields[template]

    def _explain(self, template: str, context: dict[str, Any], error: RenderError) -> RenderError:
        """``error``, naming the offer fields the template reads and the notification
        lacks, if that is why it failed (the playbook step's offer must define them)."""
        try:
            missing = sorted(self.offer_fields(template) - set(context.get(OFFER_KEY) or {}))
        except RenderError:
            return error
        if not missing or not isinstance(error.__cause__, UndefinedError):
            return error
        names = ", ".join(f"offer.{name}" for name in missing)
        return RenderError(
            f"{error} ({template} reads {names}, which the notification's "
            "offer does not define: the playbook step's offer block must)"
        )

    def _render(self, name: str, context: dict[str, Any]) -> str:
        try:
            # ``offer`` is never missing: a step without one has none (empty).
            text = self.env.get_template(name).render(**{OFFER_KEY: {}, **context}).strip()
        except Exception as exc:  # jinja2 raises many kinds; all mean the same here
            raise RenderError(f"{name}: {type(exc).__name__}: {exc}") from exc
        return _BLANK_LINES.sub("\n\n", text)

    def email(self, template: str, context: dict[str, Any]) -> RenderedEmail:
        """Subject, plain text and HTML of an email; raises :class:`RenderError`."""
        try:
            return self._email(template, context)
        except RenderError as exc:
            raise self._explain(template, context, exc) from exc.__cause__

    def _email(self, template: str, context: dict[str, Any]) -> RenderedEmail:
        subject = " ".join(self._render(f"{template}.subject.j2", context).split())
        return RenderedEmail(
            subject=subject,
            text=self._render(f"{template}.txt.j2", context),
            html=self._render(f"{template}.html.j2", {**context, "subject": subject}),
        )

    def in_app(self, template: str, context: dict[str, Any]) -> RenderedInApp:
        """Title (first line) and body of an in-app message; raises :class:`RenderError`."""
        try:
            rendered = self._render(f"{template}.in_app.j2", context)
        except RenderError as exc:
            raise self._explain(template, context, exc) from exc.__cause__
        title, _, body = rendered.partition("\n")
        if not title.strip() or not body.strip():
            raise RenderError(f"{template}.in_app.j2: needs a title line and a body")
        return RenderedInApp(title=title.strip(), body=body.strip())

    def text(self, template: str, context: dict[str, Any]) -> str:
        """The text of a CSM webhook; raises :class:`RenderError`."""
        try:
            return self._render(f"{template}.txt.j2", context)
        except RenderError as exc:
            raise self._explain(template, context, exc) from exc.__cause__

    def kind(self, template: str) -> TemplateKind:
        """Which channel ``<playbook>/<step>`` has templates for; raises :class:`RenderError`."""
        base = self.folder / template
        if base.with_name(base.name + ".subject.j2").is_file():
            return "email"
        if base.with_name(base.name + ".in_app.j2").is_file():
            return "in_app"
        if base.with_name(base.name + ".txt.j2").is_file():
            return "webhook"
        raise RenderError(f"no template {template!r} under {self.folder}")

    def templates(self) -> list[str]:
        """Every ``<playbook>/<step>`` with templates, sorted."""
        names = set()
        for path in self.folder.glob("*/*.j2"):
            if path.parent.name.startswith("_"):
                continue
            step = path.name.split(".", 1)[0]
            names.add(f"{path.parent.name}/{step}")
        return sorted(names)


def _offer_reads(tree: nodes.Template) -> set[str]:
    """Fields of ``offer`` a template reads: ``offer.name`` and ``offer["name"]``."""
    if any(n.name == OFFER_KEY and n.ctx == "store" for n in tree.find_all(nodes.Name)):
        return set()
    fields: set[str] = set()
    for attr in tree.find_all(nodes.Getattr):
        if _is_offer(attr.node):
            fields.add(attr.attr)
    for item in tree.find_all(nodes.Getitem):
        key = item.arg.value if isinstance(item.arg, nodes.Const) else None
        if _is_offer(item.node) and isinstance(key, str):
            fields.add(key)
    return fields


def _is_offer(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == OFFER_KEY
