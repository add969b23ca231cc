"""The pipeline stage that turns the rules' notify actions into messages to spool."""

from __future__ import annotations

import datetime as dt
import logging

from mailgw.db.models import HELD, QUEUED, utcnow
from mailgw.notify.compose import compose
from mailgw.notify.context import message_context
from mailgw.notify.render import NotificationError, NotificationTemplates
from mailgw.pipeline import NO_RELAY_HOST, Job, Stage
from mailgw.smtp.dsn import should_send_dsn
from mailgw.spool import Incoming

log = logging.getLogger(__name__)


def notify_stage(
    templates: NotificationTemplates,
    *,
    agency: str,
    hostname: str,
    from_addr: str,
    relay_enabled: bool,
    lifetime: dt.timedelta,
) -> Stage:
    def run(job: Job) -> None:
        job.outbound = []  # idempotent: a re-run builds the same list again
        if job.bounce_reason or not job.notifications:
            return
        context = message_context(job, agency, hostname)
        headers = job.raw[: job.raw.find(b"\r\n\r\n") + 2]
        for action in job.notifications:
            rcpts = list(action.recipients)
            if not rcpts:  # no "to": tell the sender, unless it is a robot or a null sender
                if not should_send_dsn(job.mail_from, headers):
                    continue
                rcpts = [job.mail_from]
            try:
                rendered = templates.render(action.template, context)
            except NotificationError as exc:
                log.error(
                    "%s: notification by rule %s not sent: %s", job.queue_id, action.rule, exc
                )
                if job.decision is not None:
                    job.decision.setdefault("notify_errors", []).append(str(exc))
                continue
            raw = compose(
                subject=rendered.subject,
                body=rendered.body,
                from_addr=from_addr,
                to=rcpts,
                hostname=hostname,
                in_reply_to=job.parsed.message_id if job.parsed else None,
            )
            job.outbound.append(
                Incoming(
                    raw=raw,
                    mail_from="",  # automatic mail: bounces of it must not come back (RFC 3834)
                    rcpt_to=rcpts,
                    origin="local",
                    initial_state=QUEUED if relay_enabled else HELD,
                    hold_reason=None if relay_enabled else NO_RELAY_HOST,
                    expires_at=utcnow() + lifetime,
                )
            )

    return run
