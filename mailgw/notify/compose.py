"""A notification as a new mail message (bytes), ready for the spool."""

from __future__ import annotations

import email.policy
import email.utils
from email.message import EmailMessage


def compose(
    *,
    subject: str,
    body: str,
    from_addr: str,
    to: list[str],
    hostname: str,
    in_reply_to: str | None = None,
) -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = from_addr
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=hostname)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: never answer it automatically
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body, charset="utf-8", cte="quoted-printable")
    return msg.as_bytes()
