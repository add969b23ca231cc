"""Notification templates (Jinja2): IT staff edit them, so they render in a sandbox.

A template is ``templates/notify/NAME.txt.j2`` with two blocks, ``subject`` and ``body``.
Extra template folders (configured) are searched first, so an agency can override a template
by name without touching the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    meta,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

PACKAGE_TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "notify"
SUFFIX = ".txt.j2"


class NotificationError(Exception):
    """A template is missing or does not render; the message says which and why."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


class NotificationTemplates:
    def __init__(self, extra_dirs: list[Path] | None = None):
        loaders = [FileSystemLoader(str(d)) for d in (extra_dirs or [])]
        loaders.append(FileSystemLoader(str(PACKAGE_TEMPLATES)))
        self.env = ImmutableSandboxedEnvironment(
            loader=ChoiceLoader(loaders),
            undefined=StrictUndefined,
            autoescape=False,  # plain-text mail
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def names(self) -> list[str]:
        return sorted(n[: -len(SUFFIX)] for n in self.env.list_templates() if n.endswith(SUFFIX))

    def variables(self, name: str) -> list[str]:
        """The top-level names template ``name`` uses besides ``gateway`` (what a caller of the
        API must give it). Raises NotificationError when it is missing or does not parse."""
        loader = self.env.loader
        assert loader is not None
        try:
            source, _, _ = loader.get_source(self.env, name + SUFFIX)
            used = meta.find_undeclared_variables(self.env.parse(source))
        except TemplateNotFound:
            raise NotificationError(f"no notification template {name!r}") from None
        except TemplateError as exc:
            raise NotificationError(f"template {name!r}: {exc}") from exc
        return sorted(used - {"gateway"})

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise NotificationError(f"bad template name {name!r}")
        try:
            template = self.env.get_template(name + SUFFIX)
            ctx = template.new_context(context)
            blocks = template.blocks
            if "subject" not in blocks or "body" not in blocks:
                raise NotificationError(f"template {name!r} needs blocks 'subject' and 'body'")
            subject = "".join(blocks["subject"](ctx)).strip()
            body = "".join(blocks["body"](ctx)).strip() + "\n"
        except TemplateNotFound:
            raise NotificationError(f"no notification template {name!r}") from None
        except TemplateError as exc:
            raise NotificationError(f"template {name!r}: {exc}") from exc
        return Rendered(" ".join(subject.split()), body)
