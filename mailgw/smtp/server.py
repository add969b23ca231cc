"""SMTP ingress: aiosmtpd listeners with the gateway's policy and a fast, strict DATA path.

Two kinds of listener share one handler:
- ``relay``: trusted networks and an existing MTA using mailgw as its content filter (no AUTH);
- ``submission`` (STARTTLS required before AUTH PLAIN/LOGIN) and ``smtps`` (implicit TLS) for
  staff mail clients.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import datetime as dt
import email.utils
import hashlib
import logging
import re
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiosmtpd.smtp as aiosmtpd_smtp
from aiosmtpd.smtp import (
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    _AuthMechAttr,
)

from mailgw import __version__
from mailgw.smtp.policy import (
    ConnectionCounter,
    Networks,
    RateLimiter,
    check_recipient,
    dot_unstuff,
    find_bare_line_ending,
)
from mailgw.spool import Incoming, Spool, SpoolError, new_queue_id

log = logging.getLogger(__name__)


class _BoundMethods(Mapping[str, Any]):
    """``{command: bound method}`` for one connection, bound on lookup.

    aiosmtpd builds this dict of a dozen bound methods (``_smtp_methods``) for every new
    connection, though a session looks up only the few commands it sends."""

    __slots__ = ("_functions", "_obj")

    def __init__(self, obj: object, functions: dict[str, Any]):
        self._obj = obj
        self._functions = functions

    def __getitem__(self, name: str) -> Any:
        return self._functions[name].__get__(self._obj)

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)

    def __len__(self) -> int:
        return len(self._functions)


def _parsed_credentials(*args: Any) -> AuthResult:
    """aiosmtpd's authenticator: passes on what it parsed; the password is checked in
    ``GatewaySMTP.auth_PLAIN``/``auth_LOGIN``, off the event loop."""
    return AuthResult(success=True, auth_data=args[-1])


def _default_command_size() -> int:
    return SMTP.command_size_limit


@dataclass
class _ConnectionTemplate:
    """What aiosmtpd's ``SMTP.__init__`` computes for a connection that is the same for every
    connection of a listener: taken once from a protocol built the stock way."""

    attributes: dict[str, Any]  # set as they are on every new connection
    smtp_functions: dict[str, Any]  # command -> function, bound per connection
    auth_mechanisms: dict[str, tuple[Any, bool]]  # name -> (function or bound method, builtin)


def _template_of(stock: SMTP) -> _ConnectionTemplate:
    # asyncio.StreamReaderProtocol's own attributes are made anew for every connection.
    stream_protocol = asyncio.StreamReaderProtocol(
        asyncio.StreamReader(), client_connected_cb=stock._cb_client_connected, loop=stock.loop
    )
    attributes = {
        name: value
        for name, value in vars(stock).items()
        if name not in vars(stream_protocol)
        and name not in ("_smtp_methods", "_auth_methods", "_reader", "_writer")
    }
    smtp_functions = {
        command: getattr(type(stock), method.__name__)
        for command, method in stock._smtp_methods.items()
    }
    auth_mechanisms = {
        name: (
            getattr(type(stock), impl.method.__name__) if impl.is_builtin else impl.method,
            impl.is_builtin,
        )
        for name, impl in stock._auth_methods.items()
    }
    return _ConnectionTemplate(attributes, smtp_functions, auth_mechanisms)


_SMTP_LOG = logging.getLogger("mail.log")  # aiosmtpd's logger: the SMTP transcript
_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}
_stock_sanitized_log = aiosmtpd_smtp.sanitized_log


def _sanitized_log_when_enabled(func: Callable[..., None], msg: Any, *args, **kwargs) -> None:
    """aiosmtpd.smtp.sanitized_log, which masks AUTH arguments in every command line it logs
    (twice per command, at DEBUG and INFO) before the logger decides to drop the record: here
    the masking is done only for records that will be written."""
    level = _LOG_LEVELS.get(getattr(func, "__name__", ""))
    if (
        level is None
        or _SMTP_LOG.isEnabledFor(level)
        or getattr(func, "__self__", None) is not _SMTP_LOG
    ):
        _stock_sanitized_log(func, msg, *args, **kwargs)


aiosmtpd_smtp.sanitized_log = _sanitized_log_when_enabled


# While reading DATA the stream may buffer this much before we take what it has.
DATA_READ_LIMIT = 1 << 20
# Messages larger than this are checked and unstuffed in a worker thread.
OFFLOAD_BYTES = 256 * 1024
AUTH_FAILURE_DELAY = 1.0
MAX_AUTH_FAILURES = 3

CheckCredentials = Callable[[str, str], Awaitable[bool]]

# <local@domain> with an unquoted ASCII dot-atom local part and a plain domain; anything else
# (quoted local parts, source routes, UTF-8, the null sender) goes to aiosmtpd's full parser.
_PLAIN_ANGLE_ADDR = re.compile(
    r"\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)>"
)


@dataclass
class IngressPolicy:
    hostname: str
    domains: list[str]
    trusted: Networks
    max_message_size: int
    max_recipients: int
    connections: ConnectionCounter
    rate: RateLimiter


@dataclass
class ListenerKind:
    name: str  # relay, submission, smtps
    tls_context: ssl.SSLContext | None = None
    implicit_tls: bool = False
    auth: bool = False


class CredentialCache:
    """Remembers recent successful logins (by a digest of user and password) for a minute,
    so a client that logs in for every message does not cost a password hash each time."""

    def __init__(self, check: CheckCredentials, ttl: float = 60.0):
        self.check = check
        self.ttl = ttl
        self._ok: dict[str, float] = {}

    async def verify(self, username: str, password: str) -> bool:
        key = hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
        now = time.monotonic()
        if self._ok.get(key, 0.0) > now:
            return True
        ok = await self.check(username, password)
        if ok:
            if len(self._ok) > 10000:
                self._ok.clear()
            self._ok[key] = now + self.ttl
        return ok

    def clear(self) -> None:
        """Forget every remembered login: an account was disabled or its password changed."""
        self._ok.clear()


class GatewayHandler:
    """aiosmtpd handler: policy at MAIL/RCPT, durable spooling at DATA."""

    def __init__(self, spool: Spool, policy: IngressPolicy):
        self.spool = spool
        self.policy = policy
        self.shutting_down = False
        self.sessions: set[GatewaySMTP] = set()

    async def handle_EHLO(
        self,
        server: GatewaySMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """aiosmtpd's EHLO reply plus PIPELINING (RFC 2920). aiosmtpd already answers
        commands one by one, in order, from whatever the client has sent, which is all a
        pipelining server must do; clients that pipeline (Postfix feeding its content filter,
        mail clients) then send MAIL, RCPT and DATA without waiting for each reply."""
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self, server: GatewaySMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        if self.shutting_down:
            return server.close_with("421 4.3.2 Service shutting down, try again later")
        if not self.policy.rate.allow(server.client_ip):
            return "451 4.7.1 Too many messages from your address, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: GatewaySMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        verdict = check_recipient(
            address,
            domains=self.policy.domains,
            trusted=server.trusted,
            authenticated=bool(session.authenticated),
            count=len(envelope.rcpt_tos),
            maximum=self.policy.max_recipients,
        )
        if verdict.ok:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return verdict.reply

    async def handle_DATA(self, server: GatewaySMTP, session: Session, envelope: Envelope) -> str:
        queue_id = new_queue_id()
        raw = envelope.original_content or b""
        incoming = Incoming(
            raw=raw,
            mail_from=envelope.mail_from or "",
            rcpt_to=list(envelope.rcpt_tos),
            origin="smtp",
            client_addr=server.client_ip,
            client_helo=session.host_name,
            auth_user=server.login_user,
            listener=server.kind.name,
            queue_id=queue_id,
        )
        tls = session.ssl is not None or server.kind.implicit_tls
        incoming.trace_headers = received_header(incoming, self.policy.hostname, tls=tls)
        try:
            await self.spool.accept(incoming)
        except SpoolError as exc:
            log.error("451 for message from %s: %s", server.client_ip, exc)
            return "451 4.3.0 Temporary failure storing the message, try again later"
        log.info(
            "%s: accepted from=<%s> rcpts=%d size=%d client=%s",
            queue_id,
            incoming.mail_from,
            len(incoming.rcpt_to),
            len(raw),
            server.client_ip,
        )
        return f"250 2.0.0 OK: queued as {queue_id}"


def check_and_unstuff(data: bytes) -> tuple[str | None, bytes]:
    """(what is wrong with the line endings or None, the dot-unstuffed message)."""
    problem = find_bare_line_ending(data)
    return problem, b"" if problem else dot_unstuff(data)


_last_date: tuple[int, str] = (-1, "")


def _header_date(when: dt.datetime) -> str:
    """RFC 5322 date of ``when`` in local time; formatted once per second."""
    global _last_date
    second = int(when.timestamp())
    if _last_date[0] != second:
        _last_date = (second, email.utils.format_datetime(when.astimezone()))
    return _last_date[1]


def received_header(msg: Incoming, hostname: str, *, tls: bool) -> bytes:
    """The Received trace header (RFC 5321 4.4) prepended when relaying."""
    proto = "ESMTP" + ("S" if tls else "") + ("A" if msg.auth_user else "")
    helo = (msg.client_helo or "unknown").replace("\r", "").replace("\n", "")[:200]
    when = _header_date(msg.received_at)
    recipient = f"\r\n\tfor <{msg.rcpt_to[0]}>" if len(msg.rcpt_to) == 1 else ""
    line = (
        f"Received: from {helo} ([{msg.client_addr or 'unknown'}])\r\n"
        f"\tby {hostname} (mailgw {__version__}) with {proto} id {msg.queue_id}"
        f"{recipient}; {when}\r\n"
    )
    return line.encode("utf-8", "replace")


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP with connection limits, async credential checks and a faster DATA."""

    def __init__(
        self,
        handler: GatewayHandler,
        kind: ListenerKind,
        credentials: CredentialCache | None,
        *,
        timeout: float,
        loop: asyncio.AbstractEventLoop,
        template: _ConnectionTemplate | None = None,
    ):
        """A protocol for one connection. With ``template`` (see ``_template_of``), the part
        of aiosmtpd's constructor that is the same for every connection is copied from it
        instead of being worked out again: that work (introspecting the handler and the
        protocol, building a dict of bound methods, logging the AUTH mechanisms) was 15 % of
        the listener's CPU under bench/smtp_throughput.sh."""
        self.kind = kind
        self.credentials = credentials
        self.client_ip = ""
        self.trusted = False
        self.login_user: str | None = None
        self._auth_failures = 0
        self._counted = False
        self.busy = False  # inside DATA: let it finish on shutdown
        self._deadline = 0.0  # idle timeout, see _reset_timeout
        self.handler_obj = handler
        if template is None:
            self._stock_init(handler, timeout=timeout, loop=loop)
            return
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.__dict__.update(template.attributes)
        # aiosmtpd keeps these in a dict shared by all connections and clears it in every
        # constructor; each connection gets its own here, so EHLO's additions do not pile up.
        self.command_size_limits = collections.defaultdict(_default_command_size)
        self._smtp_methods = _BoundMethods(self, template.smtp_functions)
        self._auth_methods = {
            name: _AuthMechAttr(method.__get__(self) if builtin else method, builtin)
            for name, (method, builtin) in template.auth_mechanisms.items()
        }

    def _stock_init(
        self, handler: GatewayHandler, *, timeout: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        policy = handler.policy
        kind = self.kind
        with warnings.catch_warnings():
            # Implicit TLS: the whole session is encrypted, so AUTH need not wait for STARTTLS.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            super().__init__(
                handler,
                data_size_limit=policy.max_message_size,
                enable_SMTPUTF8=True,
                decode_data=False,
                hostname=policy.hostname,
                ident=f"mailgw {__version__}",
                tls_context=None if kind.implicit_tls else kind.tls_context,
                require_starttls=kind.auth and not kind.implicit_tls,
                auth_required=kind.auth,
                auth_require_tls=not kind.implicit_tls,
                auth_exclude_mechanism=None if kind.auth else ["PLAIN", "LOGIN"],
                authenticator=_parsed_credentials,
                timeout=timeout,
                loop=loop,
            )

    # --- connection limits and shutdown

    async def _handle_client(self) -> None:
        peer = self.session.peer if self.session else None
        self.client_ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self.trusted = self.handler_obj.policy.trusted.contains(self.client_ip)
        if self.handler_obj.shutting_down:
            await self.push("421 4.3.2 Service shutting down, try again later")
            self.transport.close()
            return
        refusal = self.handler_obj.policy.connections.open(self.client_ip)
        if refusal:
            await self.push(refusal)
            self.transport.close()
            return
        self._counted = True
        self.handler_obj.sessions.add(self)
        try:
            await super()._handle_client()
        finally:
            self.handler_obj.sessions.discard(self)
            if self._counted:
                self.handler_obj.policy.connections.close(self.client_ip)
                self._counted = False

    # --- idle timeout and replies: aiosmtpd's, with less work per command

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Move the idle deadline. aiosmtpd cancels and schedules a new timer for every
        command; one timer per connection suffices, re-armed when it fires before the
        deadline (or moved when a shorter deadline is asked for)."""
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._deadline = deadline
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(deadline, self._timeout_cb)

    def _timeout_cb(self) -> None:
        if self.loop.time() < self._deadline:
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_cb)
            return
        super()._timeout_cb()

    async def push(self, status: str | bytes) -> None:
        """Send one reply line. Waits for the transport only when it has asked us to pause
        (or the connection is gone, which raises); aiosmtpd awaits drain after every line."""
        response = status.encode("utf-8") if isinstance(status, str) else status
        self._writer.write(response + b"\r\n")
        if _SMTP_LOG.isEnabledFor(logging.DEBUG):
            _SMTP_LOG.debug("%r << %r", self.session.peer if self.session else None, response)
        if self._paused or self._connection_lost:  # type: ignore[attr-defined]
            await self._writer.drain()

    def close_with(self, reply: str) -> str:
        """Return ``reply`` to send, and close the connection right after it is sent."""
        self.loop.call_soon(self._close_soon)
        return reply

    def close_now(self, reply: str) -> None:
        """Send ``reply`` and close (used on shutdown for idle sessions)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply.encode() + b"\r\n")
            self.transport.close()

    def _close_soon(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --- addresses: a fast path for the plain <local@domain> that nearly all clients send

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        match = _PLAIN_ANGLE_ADDR.match(arg) if arg else None
        if match and len(match.group(1).rpartition("@")[0]) <= (self.local_part_limit or 1 << 30):
            return match.group(1), arg[match.end() :].lstrip()
        return super()._getaddr(arg)

    # --- AUTH: let aiosmtpd parse PLAIN/LOGIN, then check the password off the loop

    async def auth_PLAIN(self, mechanism: str, args: list[str]) -> AuthResult:
        return await self._check(await super().auth_PLAIN(mechanism, args))

    async def auth_LOGIN(self, mechanism: str, args: list[str]) -> AuthResult:
        return await self._check(await super().auth_LOGIN(mechanism, args))

    async def _check(self, parsed: AuthResult) -> AuthResult:
        if not parsed.success or not isinstance(parsed.auth_data, LoginPassword):
            return parsed
        try:
            username = parsed.auth_data.login.decode("utf-8")
            password = parsed.auth_data.password.decode("utf-8")
        except (UnicodeDecodeError, binascii.Error):
            return AuthResult(
                success=False, handled=False, message="501 5.5.2 Credentials must be UTF-8"
            )
        if self.credentials and await self.credentials.verify(username, password):
            self.login_user = username
            return AuthResult(success=True, auth_data=username)
        self._auth_failures += 1
        log.warning("AUTH failed for %r from %s", username, self.client_ip)
        await asyncio.sleep(AUTH_FAILURE_DELAY)
        if self._auth_failures >= MAX_AUTH_FAILURES:
            return AuthResult(
                success=False,
                handled=False,
                message=self.close_with("421 4.7.0 Too many failed logins"),
            )
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Authentication credentials invalid"
        )

    # --- DATA: read up to the terminator in large chunks, refuse bare CR/LF

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.busy = True
        try:
            await self._receive_data()
        finally:
            self.busy = False

    async def _receive_data(self) -> None:
        assert self.envelope is not None
        data, too_big = await self._read_data()
        if too_big:
            await self.push("552 5.3.4 Message size exceeds fixed maximum message size")
            self._set_post_data_state()
            return
        if len(data) > OFFLOAD_BYTES:  # large mail: scan it off the event loop
            problem, content = await asyncio.to_thread(check_and_unstuff, data)
        else:
            problem, content = check_and_unstuff(data)
        if problem:
            log.warning("refused message with %s from %s", problem, self.client_ip)
            self._set_post_data_state()
            await self.push(f"550 5.5.2 Message refused: {problem} in data (RFC 5321 2.3.8)")
            return
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        if self.handler_obj.shutting_down and status.startswith("250"):
            status = self.close_with(status)
        await self.push(status)

    async def _read_data(self) -> tuple[bytes, bool]:
        """Read DATA up to CRLF.CRLF; return (data without the final ".CRLF", too_big).

        The stream is searched for CRLF "." CRLF itself, so a text whose lines end with a
        full stop is still read in one go (searching for ".CRLF" and looking back stopped at
        every such line: 3 ms of the event loop for 100 KB of prose). Only a CRLF at the very
        start (the DATA command's) cannot be seen that way: the first three bytes are read
        first, and in the rare case they hold a line end, the message is read line by line
        with the bytes before each in view.
        """
        reader = self._reader
        limit = self.data_size_limit
        # asyncio's StreamReader has no public way to raise its limit for one read.
        saved_limit = reader._limit  # type: ignore[attr-defined]
        reader._limit = max(saved_limit, DATA_READ_LIMIT)  # type: ignore[attr-defined]
        try:
            head = await reader.readexactly(3)
            if head == b".\r\n":  # an empty message: the terminator follows DATA's CRLF
                return b"", False
            whole_terminator = b"\r" not in head and b"\n" not in head
            # else every line end is looked at with what precedes it (head included)
            separator = b"\r\n.\r\n" if whole_terminator else b"\n"
            tail = (b"\r\n" + head)[-4:]  # the bytes before the next chunk
            chunks, size, too_big = [head], len(head), False
            while True:
                try:
                    chunk = await reader.readuntil(separator)
                    ended = whole_terminator or (tail + chunk[-5:])[-5:] == b"\r\n.\r\n"
                except asyncio.LimitOverrunError as exc:
                    chunk = await reader.readexactly(exc.consumed)
                    ended = False
                size += len(chunk)
                if limit and size > limit + 3:
                    too_big = True
                    chunks.clear()
                if not too_big:
                    chunks.append(chunk)
                tail = (tail + chunk[-4:])[-4:]
                if ended:
                    break
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError("connection closed during DATA") from exc
        finally:
            reader._limit = saved_limit  # type: ignore[attr-defined]
        if too_big:
            return b"", True
        data = b"".join(chunks)
        return data[:-3], False  # drop ".\r\n"; the CRLF before it ends the last line


async def start_listener(
    handler: GatewayHandler,
    kind: ListenerKind,
    host: str,
    port: int,
    credentials: CredentialCache | None,
    timeout: float = 300,
) -> asyncio.Server:
    """Listen on host:port with a fresh GatewaySMTP protocol per connection."""
    loop = asyncio.get_running_loop()
    stock = GatewaySMTP(handler, kind, credentials, timeout=timeout, loop=loop)
    template = _template_of(stock)

    def factory() -> GatewaySMTP:
        return GatewaySMTP(
            handler, kind, credentials, timeout=timeout, loop=loop, template=template
        )

    ssl_context = kind.tls_context if kind.implicit_tls else None
    return await loop.create_server(
        factory,
        host=host,
        port=port,
        ssl=ssl_context,
        reuse_address=True,
        backlog=512,
    )


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context
