"""The pipeline stage that turns the rules' notify actions into messages to spool."""

from __future__ import annotations

import logging

from mailgw.notify.context import message_context
from mailgw.notify.outgoing import Outgoing
from mailgw.notify.render import NotificationError, NotificationTemplates
from mailgw.pipeline import Job, Stage
from mailgw.smtp.dsn import should_send_dsn

log = logging.getLogger(__name__)


def notify_stage(templates: NotificationTemplates, outgoing: Outgoing) -> Stage:
    def run(job: Job) -> None:
        job.outbound = []  # idempotent: a re-run builds the same list again
        if job.bounce_reason or not job.notifications:
            return
        context = message_context(job, outgoing.agency, outgoing.hostname)
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
            in_reply_to = job.parsed.message_id if job.parsed else None
            job.outbound.append(outgoing.message(rendered, rcpts, in_reply_to=in_reply_to))

    return run
