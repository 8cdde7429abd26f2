"""Rendering messages from Jinja2 templates (pure: template folder in, text out).

Templates live in ``templates/<playbook>/<step>.*``: ``.subject.j2``, ``.txt.j2`` and
``.html.j2`` for an email, ``.in_app.j2`` for an in-app message (first line the title,
the rest the body), ``.txt.j2`` alone for a CSM webhook's text. HTML is autoescaped.
A field the template needs and the context lacks is an error (``StrictUndefined``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from notifier.errors import NotifierError

TEMPLATES = Path(__file__).parent.parent / "templates"

TemplateKind = Literal["email", "in_app", "webhook"]
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
        self.env = Environment(
            loader=FileSystemLoader(folder),
            autoescape=select_autoescape(["html", "html.j2"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )

    def _render(self, name: str, context: dict[str, Any]) -> str:
        try:
            text = self.env.get_template(name).render(**context).strip()
        except Exception as exc:  # jinja2 raises many kinds; all mean the same here
            raise RenderError(f"{name}: {type(exc).__name__}: {exc}") from exc
        return _BLANK_LINES.sub("\n\n", text)

    def email(self, template: str, context: dict[str, Any]) -> RenderedEmail:
        """Subject, plain text and HTML of an email; raises :class:`RenderError`."""
        subject = " ".join(self._render(f"{template}.subject.j2", context).split())
        return RenderedEmail(
            subject=subject,
            text=self._render(f"{template}.txt.j2", context),
            html=self._render(f"{template}.html.j2", {**context, "subject": subject}),
        )

    def in_app(self, template: str, context: dict[str, Any]) -> RenderedInApp:
        """Title (first line) and body of an in-app message; raises :class:`RenderError`."""
        rendered = self._render(f"{template}.in_app.j2", context)
        title, _, body = rendered.partition("\n")
        if not title.strip() or not body.strip():
            raise RenderError(f"{template}.in_app.j2: needs a title line and a body")
        return RenderedInApp(title=title.strip(), body=body.strip())

    def text(self, template: str, context: dict[str, Any]) -> str:
        """The text of a CSM webhook; raises :class:`RenderError`."""
        return self._render(f"{template}.txt.j2", context)

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
