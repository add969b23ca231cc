"""RFC 3464 delivery status notifications (bounces and delay warnings).

Pure functions: :func:`build_dsn` renders the complete DSN message as CRLF bytes, ready to be
spooled and relayed with the null sender (``MAIL FROM:<>``); :func:`should_send_dsn` says
whether a message deserves one at all (never for the null sender, never for a DSN or other
automatically submitted mail — RFC 3464 §2, RFC 3834 §2 — so two gateways cannot bounce mail
back and forth forever).

The message is ``multipart/report; report-type=delivery-status`` with three parts:

1. ``text/plain`` (UTF-8, quoted-printable): what happened, in Vietnamese first, then English;
2. ``message/delivery-status``: Reporting-MTA, X-Mailgw-Queue-Id, Arrival-Date, then for each
   recipient Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code …;
3. ``text/rfc822-headers``: the original header section.

Non-ASCII header values (Subject, From's display name) are RFC 2047 encoded. A non-ASCII
*address* cannot be RFC 2047 encoded: if the original sender's address is non-ASCII, the To:
field carries it as raw UTF-8 (RFC 6532) — the relay then uses SMTPUTF8 for the envelope, which
it must anyway. In the delivery-status part non-ASCII recipients use the RFC 6533 ``utf-8``
address type with ``\\x{HEX}`` escapes, so that part stays 7-bit.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.quoprimime import body_encode as _qp_body_encode
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any, Literal, Protocol

__all__ = [
    "DsnAction",
    "DsnRecipient",
    "build_dsn",
    "dsn_recipients",
    "header_section",
    "should_send_dsn",
]

DsnAction = Literal["failed", "delayed"]
CRLF = "\r\n"

_ENHANCED_RE = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


class _ResultLike(Protocol):  # mailgw.smtp.relay.RecipientResult, without importing it
    status: str
    code: int | None
    message: str


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """One recipient to report on."""

    rcpt: str  # the envelope recipient as relayed (Final-Recipient)
    status: str  # "perm" | "temp" (| "sent", reported as given)
    code: int | None  # SMTP reply code, None when no server replied
    message: str  # reply text (or our description, e.g. "connection refused")
    enhanced_status: str | None = None  # "5.1.1"; parsed from ``message`` when None
    remote_mta: str | None = None  # the server that replied
    original_rcpt: str | None = None  # as first received (Original-Recipient), if different
    last_attempt: datetime | None = None

    @classmethod
    def from_result(cls, rcpt: str, result: _ResultLike, **extra: Any) -> DsnRecipient:
        """From a :class:`mailgw.smtp.relay.RecipientResult` (or anything shaped like one)."""
        return cls(
            rcpt=rcpt,
            status=result.status,
            code=result.code,
            message=result.message,
            enhanced_status=getattr(result, "enhanced_status", None),
            remote_mta=getattr(result, "remote_mta", None),
            **extra,
        )


def dsn_recipients(
    results: Any, statuses: Iterable[str] = ("perm",), **extra: Any
) -> list[DsnRecipient]:
    """DsnRecipients for the recipients of a delivery result whose status is in ``statuses``.

    ``results`` is a :class:`mailgw.smtp.relay.DeliveryResult` or its ``recipients`` dict.
    """
    recipients = getattr(results, "recipients", results)
    wanted = set(statuses)
    return [
        DsnRecipient.from_result(rcpt, res, **extra)
        for rcpt, res in recipients.items()
        if res.status in wanted
    ]


# --------------------------------------------------------------------------------------------
# should we send one at all?
# --------------------------------------------------------------------------------------------


def _is_null_sender(mail_from: str | None) -> bool:
    return mail_from is None or mail_from.strip() in ("", "<>")


def should_send_dsn(mail_from: str | None, original_headers: bytes | None = None) -> bool:
    """False for the null sender, MAILER-DAEMON, and for mail that is itself a DSN/report or
    otherwise automatically submitted (``Auto-Submitted`` other than ``no``,
    ``Content-Type: multipart/report``)."""
    if _is_null_sender(mail_from):
        return False
    assert mail_from is not None
    local = mail_from.strip().strip("<>").rpartition("@")[0] or mail_from
    if local.lower() == "mailer-daemon":
        return False
    if original_headers:
        msg = BytesHeaderParser(policy=compat32).parsebytes(header_section(original_headers))
        for value in msg.get_all("Auto-Submitted", []):
            token = str(value).split(";", 1)[0].strip().strip("()").lower()
            if token and token != "no":
                return False
        ctype = str(msg.get("Content-Type", "")).split(";", 1)[0].strip().lower()
        if ctype in ("multipart/report", "message/delivery-status"):
            return False
    return True


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------


def header_section(message_or_headers: bytes) -> bytes:
    """The header section of a message (everything before the first empty line), CRLF-ended
    lines, no trailing empty line. Accepts a whole message or just its headers."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", message_or_headers)
    if data.startswith(b"\r\n"):
        return b""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[: end + 2]
    if head and not head.endswith(b"\r\n"):
        head += b"\r\n"
    return head


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _rfc5322_date(dt: datetime) -> str:
    return format_datetime(_aware(dt))


def _ascii_text(s: str) -> str:
    """One line of 7-bit text: whitespace collapsed, non-ASCII escaped."""
    s = " ".join(s.split())
    return s.encode("ascii", "backslashreplace").decode("ascii")


def _fold(name: str, value: str, width: int = 78) -> str:
    """``Name: value`` folded at spaces to lines of at most ``width`` where possible."""
    words = value.split(" ")
    lines: list[str] = []
    cur = f"{name}:"
    for w in words:
        if len(cur) + 1 + len(w) > width and cur.strip() and cur != f"{name}:":
            lines.append(cur)
            cur = " " + w
        else:
            cur = f"{cur} {w}"
    lines.append(cur)
    return CRLF.join(lines)


def _xtext_utf8(addr: str) -> str:
    """RFC 6533 utf-8-addr-xtext: QCHARs as is, everything else as ``\\x{HEX}``."""
    out = []
    for ch in addr:
        o = ord(ch)
        if 0x21 <= o <= 0x7E and ch not in "+=\\":
            out.append(ch)
        else:
            out.append(f"\\x{{{o:X}}}")
    return "".join(out)


def _addr_field(addr: str) -> str:
    return f"rfc822; {addr}" if addr.isascii() else f"utf-8; {_xtext_utf8(addr)}"


def _status_code(r: DsnRecipient, action: DsnAction) -> str:
    enhanced = r.enhanced_status
    if enhanced is None:
        m = _ENHANCED_RE.match(r.message or "")
        enhanced = ".".join(m.groups()) if m else None
    if enhanced:
        return enhanced
    return "5.0.0" if (action == "failed" and r.status == "perm") else "4.0.0"


def _diagnostic(r: DsnRecipient) -> str:
    text = _ascii_text(r.message or "")
    if r.code is not None:
        return f"smtp; {r.code} {text}".rstrip()
    return f"X-Mailgw; {text}".rstrip()


def _encoded_header(name: str, value: str) -> str:
    if value.isascii():
        return _fold(name, value)
    return f"{name}: " + Header(value, "utf-8", header_name=name).encode(linesep=CRLF)


_SUBJECTS = {
    "failed": "Thư không chuyển được / Undelivered Mail Returned to Sender",
    "delayed": "Thư đang bị chậm chuyển / Delayed Mail (still being retried)",
}


def _human_text(
    *,
    action: DsnAction,
    reporting_mta: str,
    recipients: Sequence[DsnRecipient],
    queue_id: str,
    arrival_date: datetime,
    postmaster: str,
    will_retry_until: datetime | None,
) -> str:
    lines_rcpt = []
    for r in recipients:
        lines_rcpt.append(f"  <{r.rcpt}>")
        diag = " ".join((r.message or "").split())
        detail = f"{r.code} {diag}" if r.code is not None else diag
        if r.remote_mta:
            detail += f" ({r.remote_mta})"
        lines_rcpt.append(f"      {detail}")
    rcpt_block = "\n".join(lines_rcpt)
    arrived = _rfc5322_date(arrival_date)
    until = _rfc5322_date(will_retry_until) if will_retry_until else None

    if action == "failed":
        vi = (
            f"Đây là thông báo tự động của hệ thống cổng thư điện tử {reporting_mta}.\n\n"
            "Thư của bạn KHÔNG THỂ chuyển tới (các) người nhận dưới đây. Hệ thống đã ngừng\n"
            "gửi lại thư này cho những người nhận đó.\n"
        )
        en = (
            f"This is an automatic message from the mail gateway {reporting_mta}.\n\n"
            "Your message could NOT be delivered to the recipient(s) below. The system has\n"
            "given up and will not try again for them.\n"
        )
    else:
        vi_until = f" đến {until}" if until else ""
        en_until = f" until {until}" if until else ""
        vi = (
            f"Đây là thông báo tự động của hệ thống cổng thư điện tử {reporting_mta}.\n\n"
            "Thư của bạn CHƯA chuyển được tới (các) người nhận dưới đây. Hệ thống vẫn tiếp\n"
            f"tục thử gửi lại{vi_until}; bạn không cần gửi lại thư.\n"
        )
        en = (
            f"This is an automatic message from the mail gateway {reporting_mta}.\n\n"
            "Your message has NOT YET been delivered to the recipient(s) below. The system\n"
            f"keeps trying{en_until}; you do not need to resend it.\n"
        )
    vi += (
        f"\n{rcpt_block}\n\n"
        f"Mã thư: {queue_id}, nhận lúc {arrived}.\n"
        f"Cần hỗ trợ, xin liên hệ quản trị hệ thống thư: <{postmaster}>\n"
        "và cung cấp mã thư ở trên. Tiêu đề của thư gốc được đính kèm bên dưới.\n"
    )
    en += (
        f"\n{rcpt_block}\n\n"
        f"Queue ID: {queue_id}, received {arrived}.\n"
        f"For help, contact the postmaster <{postmaster}> and quote the queue ID above.\n"
        "The headers of the original message are attached below.\n"
    )
    sep = "\n" + "-" * 72 + "\n\n"
    return vi + sep + en


def build_dsn(
    *,
    reporting_mta: str,
    original_mail_from: str,
    original_rcpt_results: Sequence[DsnRecipient | tuple[str, _ResultLike]],
    original_headers: bytes,
    queue_id: str,
    arrival_date: datetime,
    action: DsnAction,
    postmaster: str,
    will_retry_until: datetime | None = None,
    now: datetime | None = None,
) -> bytes:
    """The complete DSN message (CRLF bytes) to send to ``original_mail_from``.

    ``original_rcpt_results``: the recipients to report on — :class:`DsnRecipient` or
    ``(rcpt, RecipientResult)`` pairs. ``original_headers``: the original header section (a
    whole message is accepted; only its headers are used). ``reporting_mta``: this gateway's
    host name (also the From: domain, MAILER-DAEMON@…). Raises ``ValueError`` for a null
    sender (never bounce a bounce), an unknown action or no recipients.
    """
    if _is_null_sender(original_mail_from):
        raise ValueError("no DSN for the null sender")
    if action not in ("failed", "delayed"):
        raise ValueError(f"action must be 'failed' or 'delayed', not {action!r}")
    recipients = [
        r if isinstance(r, DsnRecipient) else DsnRecipient.from_result(r[0], r[1])
        for r in original_rcpt_results
    ]
    if not recipients:
        raise ValueError("a DSN needs at least one recipient")
    sender = original_mail_from.strip()
    if sender.startswith("<") and sender.endswith(">"):
        sender = sender[1:-1]
    for value in (sender, reporting_mta, queue_id):
        if re.search(r"[\x00-\x1f\x7f]", value):
            raise ValueError(f"control character in {value!r}")

    now = _aware(now or datetime.now(UTC))
    boundary = f"=_mailgw-dsn-{uuid.uuid4().hex}"
    headers_part = header_section(original_headers)

    # --- top-level header --------------------------------------------------------------
    from_name = "Hệ thống chuyển thư (Mail Delivery System)"
    top = [
        f"From: {formataddr((from_name, f'MAILER-DAEMON@{reporting_mta}'), charset='utf-8')}",
        f"To: {formataddr(('', sender))}" if sender.isascii() else f"To: <{sender}>",
        _encoded_header("Subject", _SUBJECTS[action]),
        f"Date: {_rfc5322_date(now)}",
        f"Message-ID: {make_msgid(idstring='dsn', domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",
        f"X-Mailgw-Queue-Id: {queue_id}",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
    ]
    original_id = BytesHeaderParser(policy=compat32).parsebytes(headers_part).get("Message-ID")
    if original_id:
        mid = str(original_id).strip()
        if mid.isascii() and re.fullmatch(r"<[^<>\s]+>", mid):
            top.insert(5, f"In-Reply-To: {mid}")
            top.insert(6, f"References: {mid}")

    # --- part 1: human readable --------------------------------------------------------
    text = _human_text(
        action=action,
        reporting_mta=reporting_mta,
        recipients=recipients,
        queue_id=queue_id,
        arrival_date=arrival_date,
        postmaster=postmaster,
        will_retry_until=will_retry_until,
    )
    qp = _qp_body_encode(text.encode("utf-8").decode("latin-1"), maxlinelen=76, eol=CRLF)

    # --- part 2: delivery status -------------------------------------------------------
    per_message = [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Mailgw-Queue-Id: {queue_id}",
        f"Arrival-Date: {_rfc5322_date(arrival_date)}",
    ]
    blocks = [CRLF.join(per_message)]
    for r in recipients:
        fields = []
        if r.original_rcpt and r.original_rcpt != r.rcpt:
            fields.append(f"Original-Recipient: {_addr_field(r.original_rcpt)}")
        fields += [
            f"Final-Recipient: {_addr_field(r.rcpt)}",
            f"Action: {action}",
            f"Status: {_status_code(r, action)}",
        ]
        if r.remote_mta:
            fields.append(f"Remote-MTA: dns; {_ascii_text(r.remote_mta)}")
        fields.append(_fold("Diagnostic-Code", _diagnostic(r)))
        if r.last_attempt:
            fields.append(f"Last-Attempt-Date: {_rfc5322_date(r.last_attempt)}")
        if action == "delayed" and will_retry_until:
            fields.append(f"Will-Retry-Until: {_rfc5322_date(will_retry_until)}")
        blocks.append(CRLF.join(fields))
    status_body = (CRLF + CRLF).join(blocks) + CRLF

    # --- assemble ----------------------------------------------------------------------
    hp_cte = "7bit" if headers_part.isascii() else "8bit"
    out = bytearray()
    out += (CRLF.join(top) + CRLF + CRLF).encode("utf-8")
    out += b"This is a MIME-encapsulated delivery status notification (RFC 3464).\r\n\r\n"
    out += f"--{boundary}\r\n".encode()
    out += (
        b"Content-Description: Notification\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    out += qp.encode("ascii") + b"\r\n"
    out += f"\r\n--{boundary}\r\n".encode()
    out += (
        b"Content-Description: Delivery report\r\n"
        b"Content-Type: message/delivery-status\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n\r\n"
    )
    out += status_body.encode("ascii")
    out += f"\r\n--{boundary}\r\n".encode()
    out += (
        b"Content-Description: Undelivered message headers\r\n"
        b"Content-Type: text/rfc822-headers\r\n"
        b"Content-Transfer-Encoding: " + hp_cte.encode() + b"\r\n\r\n"
    )
    out += headers_part
    out += f"\r\n--{boundary}--\r\n".encode()
    return bytes(out)
