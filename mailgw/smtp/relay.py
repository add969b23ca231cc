"""Outbound relay: deliver one spooled message to the downstream MTA.

This module is the I/O edge of the relay queue. It does one SMTP transaction per call and
reports a result per recipient; retrying, backoff scheduling and DSNs are the caller's job
(see :func:`next_retry_delay` and :mod:`mailgw.smtp.dsn`).

The message bytes are evidence (DESIGN.md invariant 2): they are sent exactly as given. The
only transformations on the wire are the SMTP protocol's own — dot-stuffing (undone by the
receiver) and, if the input is not clean CRLF, conversion of bare CR / LF to CRLF plus a final
CRLF, which RFC 5321 requires; :attr:`DeliveryResult.line_endings_normalized` reports that.

Failure classification:

- connection refused / reset, timeouts, TLS errors, a non-220 greeting, EHLO/HELO errors,
  STARTTLS required but not offered, AUTH failures → ``temp`` for every recipient. These are
  problems of the path to our downstream server, not of the recipients, so they are retried
  and end in a DSN only on expiry.
- MAIL FROM refused → ``temp``/``perm`` for every recipient by the reply class (except 530,
  "authentication/STARTTLS required", a configuration problem → ``temp``).
- RCPT refused → ``temp``/``perm`` for that recipient by the reply class.
- DATA refused (at ``DATA`` or after the final dot) → that status for every recipient the
  server had accepted.
- non-ASCII envelope addresses and no SMTPUTF8 on the server → ``perm`` (5.6.7, RFC 6531)
  for the affected recipients (all of them if the sender is non-ASCII).
"""

from __future__ import annotations

import asyncio
import random
import re
import ssl
from dataclasses import dataclass, field
from typing import Literal

import aiosmtplib
from aiosmtplib.errors import (
    SMTPDataError,
    SMTPException,
    SMTPResponseException,
)
from aiosmtplib.protocol import normalize_message_line_endings

__all__ = [
    "DeliveryResult",
    "RecipientResult",
    "RecipientStatus",
    "RelayTarget",
    "StartTLSPolicy",
    "deliver",
    "next_retry_delay",
    "parse_enhanced_status",
]

StartTLSPolicy = Literal["opportunistic", "required", "none"]
RecipientStatus = Literal["sent", "temp", "perm"]

_ENHANCED_RE = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_BARE_EOL_RE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
# Characters that can never appear inside an envelope address on the command line.
_BAD_ADDR_RE = re.compile(r"[\x00-\x20\x7f<>]")


@dataclass(frozen=True, slots=True)
class RelayTarget:
    """Where and how to relay: the downstream MTA."""

    host: str
    port: int = 25
    starttls: StartTLSPolicy = "opportunistic"
    implicit_tls: bool = False  # TLS from the first byte (port 465 style)
    verify_tls: bool = True
    ca_file: str | None = None  # extra CA bundle for verification (e.g. an internal CA)
    username: str | None = None  # AUTH when set
    password: str | None = None
    timeout: float = 60.0  # seconds, per connect / command / reply
    helo_name: str | None = None  # EHLO name; None → the local FQDN

    def __post_init__(self) -> None:
        if self.starttls not in ("opportunistic", "required", "none"):
            raise ValueError(f"starttls must be opportunistic|required|none, not {self.starttls!r}")
        if self.implicit_tls and self.starttls == "required":
            raise ValueError("implicit_tls and starttls='required' are mutually exclusive")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """Outcome for one recipient of one delivery attempt."""

    status: RecipientStatus
    code: int | None  # the server's reply code; None when no reply applies (connect failure…)
    message: str  # the server's reply text, or our own description of the failure
    enhanced_status: str | None = None  # "5.1.1" when the server gave one (or we chose one)
    remote_mta: str | None = None  # host that produced the reply, when a server replied

    @property
    def diagnostic(self) -> str:
        """``"550 5.1.1 user unknown"``-style text for logs and DSN Diagnostic-Code."""
        text = " ".join(self.message.split())
        return f"{self.code} {text}" if self.code is not None else text


@dataclass(slots=True)
class DeliveryResult:
    """Outcome of one delivery attempt: a result for every (distinct) recipient."""

    recipients: dict[str, RecipientResult]
    remote_mta: str | None = None  # the downstream host, once it greeted us
    tls: bool = False  # whether the transaction ran over TLS
    data_response: str | None = None  # the server's reply to the final dot (queue id…)
    line_endings_normalized: bool = False  # bare CR/LF had to be sent as CRLF
    notes: list[str] = field(default_factory=list)  # non-fatal remarks worth logging

    @property
    def all_sent(self) -> bool:
        return bool(self.recipients) and all(r.status == "sent" for r in self.recipients.values())

    @property
    def sent(self) -> list[str]:
        return [a for a, r in self.recipients.items() if r.status == "sent"]

    @property
    def temp_failed(self) -> list[str]:
        return [a for a, r in self.recipients.items() if r.status == "temp"]

    @property
    def perm_failed(self) -> list[str]:
        return [a for a, r in self.recipients.items() if r.status == "perm"]


def parse_enhanced_status(message: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply text, e.g. ``"5.1.1"``."""
    m = _ENHANCED_RE.match(message or "")
    return ".".join(m.groups()) if m else None


def next_retry_delay(
    attempt: int, initial: float, maximum: float, *, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    Exponential backoff ``initial * 2**(attempt-1)`` capped at ``maximum``, with jitter that
    only shortens the delay by up to 25 %, so the result always lies in
    ``[0.75 * base, base]`` with ``base = min(maximum, initial * 2**(attempt-1))``: never above
    ``maximum``, and spread out so that a burst of failures does not retry in lock-step.
    Pure apart from the random source; pass ``rng`` for determinism.
    """
    if initial < 0 or maximum < 0:
        raise ValueError("initial and maximum must be >= 0")
    exponent = min(max(attempt, 1) - 1, 60)  # 2**60 dwarfs any sane maximum; avoids overflow
    base = min(maximum, initial * (2.0**exponent))
    r = (rng or random).random()
    return base * (1.0 - 0.25 * r)


def _is_ascii(s: str) -> bool:
    return s.isascii()


def _classify(code: int) -> RecipientStatus:
    # 530 = "authentication / STARTTLS required": our relay configuration is wrong, which
    # retrying after a fix cures; it says nothing about the message or the recipient.
    return "perm" if 500 <= code <= 599 and code != 530 else "temp"


class _TempFailure(Exception):
    """Session-level failure: every undecided recipient gets ``temp``."""

    def __init__(self, message: str, code: int | None = None, server_text: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.server_text = server_text  # the server's reply text, when a server replied
        self.from_server = server_text is not None


def _build_tls_context(target: RelayTarget) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if target.ca_file:
        ctx.load_verify_locations(cafile=target.ca_file)
    if not target.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _check_address(addr: str, what: str) -> None:
    if _BAD_ADDR_RE.search(addr):
        raise ValueError(f"{what} address {addr!r} contains characters not allowed in SMTP")


async def deliver(
    data: bytes, mail_from: str, rcpts: list[str], target: RelayTarget
) -> DeliveryResult:
    """Relay ``data`` to ``target`` in one SMTP transaction for all ``rcpts``.

    ``mail_from`` is the bare envelope sender ("" or "<>" for the null sender); ``rcpts`` are
    bare addresses. Never raises for delivery problems — they are in the result; raises
    ``ValueError`` only for caller errors (no recipients, addresses with control characters).
    """
    if not rcpts:
        raise ValueError("deliver() needs at least one recipient")
    if mail_from == "<>":
        mail_from = ""
    _check_address(mail_from, "sender")
    unique_rcpts = list(dict.fromkeys(rcpts))
    for r in unique_rcpts:
        if not r:
            raise ValueError("empty recipient address")
        _check_address(r, "recipient")

    result = DeliveryResult(recipients={})
    wire = normalize_message_line_endings(data)
    if wire != data:
        result.line_endings_normalized = bool(_BARE_EOL_RE.search(data))
        if not result.line_endings_normalized:
            result.notes.append("final CRLF added (message did not end with a line break)")
        else:
            result.notes.append("bare CR/LF in message sent as CRLF")

    decided: dict[str, RecipientResult] = {}

    def finish_all(res: RecipientResult) -> None:
        for r in unique_rcpts:
            decided.setdefault(r, res)

    try:
        tls_context = None
        if target.implicit_tls or target.starttls != "none":
            # loading the CA bundle is CPU + disk work: keep it off the event loop
            tls_context = await asyncio.to_thread(_build_tls_context, target)
    except (OSError, ssl.SSLError) as exc:  # e.g. unreadable ca_file: fix config, retry
        for r in unique_rcpts:
            decided.setdefault(r, RecipientResult("temp", None, f"TLS setup failed: {exc}"))
        result.recipients = decided
        return result

    smtp = aiosmtplib.SMTP(
        hostname=target.host,
        port=target.port,
        local_hostname=target.helo_name,
        timeout=target.timeout,
        use_tls=target.implicit_tls,
        start_tls=False,  # STARTTLS is driven below, per policy
        tls_context=tls_context,
    )
    try:
        try:
            await _transaction(smtp, wire, mail_from, unique_rcpts, target, result, decided)
        finally:
            await _quit_quietly(smtp, target.timeout)
    except _TempFailure as exc:
        finish_all(
            RecipientResult(
                "temp",
                exc.code,
                exc.message,
                parse_enhanced_status(exc.server_text or ""),
                result.remote_mta if exc.from_server else None,
            )
        )
    except SMTPResponseException as exc:  # a reply we did not expect to handle specially
        finish_all(
            RecipientResult(
                "temp",
                exc.code,
                exc.message,
                parse_enhanced_status(exc.message),
                result.remote_mta,
            )
        )
    except (SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
        finish_all(RecipientResult("temp", None, _describe(exc, target)))

    result.recipients = {r: decided[r] for r in unique_rcpts}
    return result


def _describe(exc: BaseException, target: RelayTarget) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLError | ssl.CertificateError) or "SSL" in type(exc).__name__:
        return f"TLS failure with {target.host}:{target.port}: {text}"
    return f"delivery to {target.host}:{target.port} failed: {text}"


async def _quit_quietly(smtp: aiosmtplib.SMTP, timeout: float) -> None:
    if not smtp.is_connected:
        return
    try:
        await smtp.quit(timeout=min(timeout, 10.0))
    except Exception:
        pass
    finally:
        smtp.close()


async def _ehlo(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError as exc:
        if not smtp.is_connected:
            raise
        try:
            await smtp.helo()
        except aiosmtplib.SMTPHeloError:
            raise _TempFailure(
                f"EHLO/HELO refused: {exc.code} {exc.message}", exc.code, exc.message
            ) from exc


async def _transaction(
    smtp: aiosmtplib.SMTP,
    wire: bytes,
    mail_from: str,
    rcpts: list[str],
    target: RelayTarget,
    result: DeliveryResult,
    decided: dict[str, RecipientResult],
) -> None:
    try:
        await smtp.connect()
    except aiosmtplib.SMTPConnectResponseError as exc:
        result.remote_mta = target.host
        raise _TempFailure(
            f"greeting refused: {exc.code} {exc.message}", exc.code, exc.message
        ) from exc
    result.remote_mta = target.host
    result.tls = target.implicit_tls
    await _ehlo(smtp)

    if not target.implicit_tls and target.starttls != "none":
        if smtp.supports_extension("starttls"):
            try:
                await smtp.starttls()
            except SMTPResponseException as exc:
                raise _TempFailure(
                    f"STARTTLS refused: {exc.code} {exc.message}", exc.code, exc.message
                ) from exc
            result.tls = True
            await _ehlo(smtp)
        elif target.starttls == "required":
            raise _TempFailure(
                f"STARTTLS required by configuration but not offered by {target.host}"
            )

    if target.username is not None:
        try:
            await smtp.login(target.username, target.password or "")
        except SMTPResponseException as exc:
            raise _TempFailure(
                f"AUTH failed: {exc.code} {exc.message}", exc.code, exc.message
            ) from exc
        except SMTPException as exc:  # e.g. no AUTH offered (often: only after STARTTLS)
            raise _TempFailure(f"AUTH not possible: {exc}") from exc

    def server_result(status: RecipientStatus, code: int, message: str) -> RecipientResult:
        return RecipientResult(status, code, message, parse_enhanced_status(message), target.host)

    # --- envelope options -------------------------------------------------------------
    utf8_offered = smtp.supports_extension("smtputf8")
    sender_utf8 = not _is_ascii(mail_from)
    sendable = list(rcpts)
    if (sender_utf8 or any(not _is_ascii(r) for r in rcpts)) and not utf8_offered:
        why = "5.6.7 non-ASCII address but the downstream server does not offer SMTPUTF8"
        affected = rcpts if sender_utf8 else [r for r in rcpts if not _is_ascii(r)]
        for r in affected:
            decided[r] = RecipientResult("perm", None, why, "5.6.7")
        sendable = [r for r in rcpts if r not in decided]
        if not sendable:
            return
    use_utf8 = utf8_offered and (sender_utf8 or any(not _is_ascii(r) for r in sendable))
    encoding = "utf-8" if use_utf8 else "ascii"

    options: list[bytes] = []
    if smtp.supports_extension("size"):
        options.append(b"SIZE=%d" % len(wire))
    if not wire.isascii():
        if smtp.supports_extension("8bitmime"):
            options.append(b"BODY=8BITMIME")
        else:
            result.notes.append("8-bit message sent to a server that does not offer 8BITMIME")
    if use_utf8:
        options.append(b"SMTPUTF8")

    # --- MAIL / RCPT -------------------------------------------------------------------
    resp = await smtp.execute_command(
        b"MAIL", b"FROM:<" + mail_from.encode(encoding) + b">", *options
    )
    if resp.code != 250:
        res = server_result(_classify(resp.code), resp.code, resp.message)
        for r in sendable:
            decided[r] = res
        await _rset_quietly(smtp)
        return

    accepted: list[str] = []
    for r in sendable:
        resp = await smtp.execute_command(b"RCPT", b"TO:<" + r.encode(encoding) + b">")
        if resp.code in (250, 251):
            accepted.append(r)
        else:
            decided[r] = server_result(_classify(resp.code), resp.code, resp.message)
    if not accepted:
        await _rset_quietly(smtp)
        return

    # --- DATA --------------------------------------------------------------------------
    try:
        resp = await smtp.data(wire)
    except SMTPDataError as exc:
        res = server_result(_classify(exc.code), exc.code, exc.message)
        for r in accepted:
            decided[r] = res
        await _rset_quietly(smtp)
        return
    result.data_response = resp.message
    for r in accepted:
        decided[r] = server_result("sent", resp.code, resp.message)


async def _rset_quietly(smtp: aiosmtplib.SMTP) -> None:
    if not smtp.is_connected:
        return
    try:
        await smtp.rset()
    except Exception:
        pass
