"""Rendering messages from Jinja2 templates (pure: template folder in, text out)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).parent.parent / "templates"


class RenderError(Exception):
    """A template is missing, broken, or needs a field the notification lacks."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class Renderer:
    def __init__(self, folder: Path = TEMPLATES) -> None:
        self.env = Environment(
            loader=FileSystemLoader(folder),
            autoescape=select_autoescape(["html", "html.j2"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def _render(self, name: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(name).render(**context).strip()
        except Exception as exc:  # jinja2 raises many kinds; all mean the same here
            raise RenderError(f"{name}: {type(exc).__name__}: {exc}") from exc

    def email(self, template: str, context: dict[str, Any]) -> RenderedEmail:
        return RenderedEmail(
            subject=self._render(f"{template}.subject.j2", context),
            text=self._render(f"{template}.txt.j2", context),
            html=self._render(f"{template}.html.j2", context),
        )

    def text(self, template: str, context: dict[str, Any]) -> str:
        return self._render(f"{template}.txt.j2", context)
