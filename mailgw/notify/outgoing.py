"""The gateway's own notifications as messages to spool, for the pipeline and the API alike.

A notification is automatic mail (RFC 3834): null envelope sender, so bounces of it never come
back, and it skips the pipeline: it is spooled ``queued`` for the relay queue (its retries and
backoff), or ``held`` when no relay host is configured (released when one is).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from mailgw.config import Config
from mailgw.db.models import HELD, QUEUED, utcnow
from mailgw.notify.compose import compose
from mailgw.notify.context import request_context
from mailgw.notify.render import NotificationTemplates, Rendered
from mailgw.pipeline import NO_RELAY_HOST
from mailgw.spool import Incoming, Spool


def templates_for(config: Config) -> NotificationTemplates:
    """The configured template folder first, then the packaged templates."""
    folder = config.notify.templates_dir
    return NotificationTemplates([folder] if folder else [])


@dataclass(frozen=True)
class Outgoing:
    """How notifications are addressed and queued ([notify] and [relay] settings)."""

    from_addr: str
    agency: str
    hostname: str
    relay_enabled: bool
    lifetime: dt.timedelta

    @classmethod
    def from_config(cls, config: Config) -> Outgoing:
        return cls(
            from_addr=config.notify.from_address or f"mailgw@{config.hostname}",
            agency=config.notify.agency,
            hostname=config.hostname,
            relay_enabled=bool(config.relay.host),
            lifetime=dt.timedelta(hours=config.relay.max_lifetime_hours),
        )

    def message(
        self, rendered: Rendered, rcpts: list[str], *, in_reply_to: str | None = None
    ) -> Incoming:
        raw = compose(
            subject=rendered.subject,
            body=rendered.body,
            from_addr=self.from_addr,
            to=rcpts,
            hostname=self.hostname,
            in_reply_to=in_reply_to,
        )
        return Incoming(
            raw=raw,
            mail_from="",  # automatic mail: bounces of it must not come back (RFC 3834)
            rcpt_to=rcpts,
            origin="local",
            initial_state=QUEUED if self.relay_enabled else HELD,
            hold_reason=None if self.relay_enabled else NO_RELAY_HOST,
            expires_at=utcnow() + self.lifetime,
        )


@dataclass(frozen=True)
class Notifier:
    """Notifications sent on request (POST /notifications): the gateway's templates, its spool
    and its settings."""

    templates: NotificationTemplates
    spool: Spool
    outgoing: Outgoing

    def build(self, template: str, rcpts: list[str], variables: dict[str, Any]) -> Incoming:
        """Render and compose (blocking: templates are read from disk). Raises
        NotificationError when the template is unknown or does not render."""
        out = self.outgoing
        rendered = self.templates.render(
            template, request_context(variables, out.agency, out.hostname)
        )
        return out.message(rendered, rcpts)
