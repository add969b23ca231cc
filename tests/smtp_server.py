"""A real downstream SMTP server for tests (aiosmtpd), with programmable behaviour.

Two ways to run it, same class, same behaviour knobs:

* **thread mode** (``start()`` / ``stop()`` or ``with DownstreamSMTP() as srv``): the server runs
  its own event loop in a daemon thread. Works from sync tests, from tests that run the gateway
  in a subprocess, and from async tests too (the test's loop is never needed by the server, so a
  test may even block).
* **in-loop mode** (``await astart()`` / ``await astop()`` or ``async with DownstreamSMTP()``):
  the server lives in the running (test) event loop. Cheaper, but the test must not block the
  loop while the server is expected to answer.

Every accepted message is recorded as a :class:`ReceivedMessage` with the exact bytes received
(after the protocol's dot-unstuffing, i.e. what the client handed to its SMTP library).

``down()``/``up()`` (``adown()``/``aup()``) stop listening — closing open sessions, so new
connections are refused — and listen again on the same port.

No pytest fixtures live here on purpose (tests/conftest.py belongs to someone else); define a
small fixture in your own test module, e.g.::

    @pytest.fixture
    def downstream():
        with DownstreamSMTP() as srv:
            yield srv
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "DownstreamSMTP",
    "ReceivedMessage",
    "TLSFiles",
    "make_self_signed_cert",
    "running_downstream",
]


# --------------------------------------------------------------------------------------------
# certificates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    cert: Path  # PEM certificate (also usable as the client's CA file: it is self-signed)
    key: Path  # PEM private key

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx


def make_self_signed_cert(directory: str | Path, hostname: str = "localhost") -> TLSFiles:
    """A self-signed cert valid for ``hostname``, ``localhost`` and 127.0.0.1 (2 days).

    Uses the ``cryptography`` package when importable, else the ``openssl`` CLI.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        _make_cert_cryptography(cert, key, hostname)
    except ImportError:
        _make_cert_openssl(cert, key, hostname)
    return TLSFiles(cert, key)


def _make_cert_cryptography(cert: Path, key: Path, hostname: str) -> None:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    sans = {hostname, "localhost"}
    crt = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(h) for h in sorted(sans)]
                + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(pkey, hashes.SHA256())
    )
    key.write_bytes(
        pkey.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert.write_bytes(crt.public_bytes(serialization.Encoding.PEM))


def _make_cert_openssl(cert: Path, key: Path, hostname: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("neither the cryptography package nor the openssl CLI is available")
    sans = ",".join(f"DNS:{h}" for h in sorted({hostname, "localhost"})) + ",IP:127.0.0.1"
    subprocess.run(
        [
            exe,
            "req",
            "-x509",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={hostname}",
            "-addext",
            f"subjectAltName={sans}",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------


@dataclass
class ReceivedMessage:
    mail_from: str  # bare address; "" for the null sender
    rcpts: list[str]
    data: bytes  # exactly the message bytes received (dot-unstuffed)
    mail_options: list[str]
    rcpt_options: list[str]
    tls: bool  # session was encrypted (STARTTLS or implicit TLS)
    auth_user: str | None  # AUTH login name, if the client authenticated
    smtputf8: bool  # the client used the SMTPUTF8 MAIL parameter
    helo: str | None
    peer: Any = None


@dataclass
class _Behaviour:
    reject_mail_from: tuple[int, str] | None = None
    reject_rcpt: dict[str, tuple[int, str]] = field(default_factory=dict)
    fail_data: tuple[int, str] | None = None
    data_delay: float = 0.0


def _session_is_tls(server: SMTP, session: Session) -> bool:
    if session.ssl is not None:  # STARTTLS
        return True
    transport = server.transport  # implicit TLS: the transport itself is SSL
    return transport is not None and transport.get_extra_info("sslcontext") is not None


class _Handler:
    def __init__(self, owner: DownstreamSMTP):
        self.owner = owner

    async def handle_MAIL(self, server, session, envelope: Envelope, address, mail_options):
        b = self.owner.behaviour
        if b.reject_mail_from is not None:
            code, text = b.reject_mail_from
            return f"{code} {text}"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope: Envelope, address, rcpt_options):
        b = self.owner.behaviour
        rej = b.reject_rcpt.get(address) or b.reject_rcpt.get(address.lower())
        if rej is not None:
            return f"{rej[0]} {rej[1]}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session: Session, envelope: Envelope):
        b = self.owner.behaviour
        if b.data_delay:
            await asyncio.sleep(b.data_delay)
        if b.fail_data is not None:
            code, text = b.fail_data
            return f"{code} {text}"
        auth_user = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            auth_user = session.auth_data.login.decode("utf-8", "replace")
        mail_from = envelope.mail_from or ""
        msg = ReceivedMessage(
            mail_from="" if mail_from == "<>" else mail_from,
            rcpts=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            mail_options=list(envelope.mail_options),
            rcpt_options=list(envelope.rcpt_options),
            tls=_session_is_tls(server, session),
            auth_user=auth_user,
            smtputf8=envelope.smtp_utf8,
            helo=session.host_name,
            peer=session.peer,
        )
        n = self.owner._record(msg)
        return f"250 2.0.0 Ok: queued as TEST{n:05d}"


class DownstreamSMTP:
    """A programmable aiosmtpd server on 127.0.0.1 (free port unless ``port`` is given).

    Parameters:
        tls: TLSFiles to offer STARTTLS with (``None`` → no STARTTLS).
        require_starttls: refuse MAIL etc. until STARTTLS (needs ``tls``).
        implicit_tls: TLS from the first byte (port-465 style; needs ``tls``).
        users: {login: password} → AUTH PLAIN/LOGIN offered (after TLS if ``tls`` is set).
        require_auth: refuse MAIL until authenticated.
        smtputf8: advertise SMTPUTF8.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TLSFiles | None = None,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        users: dict[str, str] | None = None,
        require_auth: bool = False,
        smtputf8: bool = True,
        hostname: str = "downstream.test",
        data_size_limit: int = 32 * 1024 * 1024,
    ):
        if (require_starttls or implicit_tls) and tls is None:
            raise ValueError("require_starttls / implicit_tls need tls=TLSFiles")
        if require_auth and not users:
            raise ValueError("require_auth needs users")
        self.host = host
        self.port = port
        self.tls = tls
        self.require_starttls = require_starttls
        self.implicit_tls = implicit_tls
        self.users = dict(users or {})
        self.require_auth = require_auth
        self.smtputf8 = smtputf8
        self.hostname = hostname
        self.data_size_limit = data_size_limit
        self.behaviour = _Behaviour()
        self.connections = 0  # sessions opened so far
        self._messages: list[ReceivedMessage] = []
        self._cond = threading.Condition()
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[SMTP] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._threaded = False
        self._ssl_ctx = tls.server_context() if tls is not None else None

    # ---- behaviour -------------------------------------------------------------------------

    def reject_rcpt(self, address: str, code: int = 550, text: str = "5.1.1 No such user") -> None:
        self.behaviour.reject_rcpt[address] = (code, text)

    def reject_mail_from(self, code: int = 550, text: str = "5.7.1 Sender rejected") -> None:
        self.behaviour.reject_mail_from = (code, text)

    def fail_data(self, code: int = 554, text: str = "5.6.0 Message rejected") -> None:
        self.behaviour.fail_data = (code, text)

    def delay_data(self, seconds: float) -> None:
        """Sleep this long before answering the final dot (to provoke client timeouts)."""
        self.behaviour.data_delay = seconds

    def reset_behaviour(self) -> None:
        self.behaviour = _Behaviour()

    # ---- recorded mail ---------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._cond:
            return list(self._messages)

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def _record(self, msg: ReceivedMessage) -> int:
        with self._cond:
            self._messages.append(msg)
            self._cond.notify_all()
            return len(self._messages)

    def wait_for_messages(self, count: int = 1, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block (thread mode!) until ``count`` messages arrived; AssertionError on timeout."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self._messages) >= count, timeout)
            if not ok:
                raise AssertionError(
                    f"expected {count} message(s) within {timeout}s, got {len(self._messages)}"
                )
            return list(self._messages)

    async def async_wait_for_messages(
        self, count: int = 1, timeout: float = 10.0
    ) -> list[ReceivedMessage]:
        """Like :meth:`wait_for_messages` without blocking the running loop (both modes)."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages
            if len(msgs) >= count:
                return msgs
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"expected {count} message(s) within {timeout}s, got {len(msgs)}"
                )
            await asyncio.sleep(0.01)

    # ---- core open / close (run in whichever loop hosts the server) -------------------------

    def _factory(self) -> SMTP:
        auth_kwargs: dict[str, Any] = {}
        if self.users:
            auth_kwargs = {
                "authenticator": self._authenticate,
                "auth_required": self.require_auth,
                "auth_require_tls": self.tls is not None,
            }
        else:
            auth_kwargs = {"auth_require_tls": False}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "AUTH without TLS" warning: intended in tests
            smtp = _RecordingSMTP(
                self,
                _Handler(self),
                hostname=self.hostname,
                enable_SMTPUTF8=self.smtputf8,
                data_size_limit=self.data_size_limit,
                tls_context=None if self.implicit_tls else self._ssl_ctx,
                require_starttls=self.require_starttls,
                timeout=30,
                loop=self._loop,
                **auth_kwargs,
            )
        return smtp

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            if self.users.get(login) == password:
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            self._factory,
            host=self.host,
            port=self.port,
            ssl=self._ssl_ctx if self.implicit_tls else None,
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for s in list(self._sessions):
            transport = s.transport
            if transport is not None:
                transport.close()
            original = getattr(s, "_original_transport", None)
            if original is not None:
                original.close()
        self._sessions.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        await asyncio.sleep(0)  # let connection_lost callbacks run

    @property
    def is_up(self) -> bool:
        return self._server is not None

    # ---- thread mode -----------------------------------------------------------------------

    def start(self) -> DownstreamSMTP:
        if self._thread is not None or self._loop is not None:
            raise RuntimeError("already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            # stopped: cancel leftovers, close
            tasks = asyncio.all_tasks(loop)
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name=f"downstream-smtp-{id(self)}")
        self._thread.daemon = True
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("server thread did not start")
        self._threaded = True
        self._loop = loop
        self._call(self._open())
        return self

    def _call(self, coro, timeout: float = 10.0) -> Any:
        assert self._loop is not None and self._threaded
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def down(self) -> None:
        """Stop listening and drop open sessions (connections are now refused)."""
        self._call(self._close())

    def up(self) -> None:
        """Listen again on the same port."""
        self._call(self._open())

    def stop(self) -> None:
        if not self._threaded or self._loop is None:
            return
        loop, thread = self._loop, self._thread
        try:
            self._call(self._close())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            assert thread is not None
            thread.join(10)
            self._thread = None
            self._loop = None
            self._threaded = False

    def __enter__(self) -> DownstreamSMTP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- in-loop mode ----------------------------------------------------------------------

    async def astart(self) -> DownstreamSMTP:
        if self._threaded or self._server is not None:
            raise RuntimeError("already started")
        await self._open()
        return self

    async def adown(self) -> None:
        await self._close()

    async def aup(self) -> None:
        await self._open()

    async def astop(self) -> None:
        await self._close()
        self._loop = None

    async def __aenter__(self) -> DownstreamSMTP:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    # ---- convenience -----------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __repr__(self) -> str:
        state = "up" if self.is_up else "down"
        return f"<DownstreamSMTP {self.host}:{self.port} {state} msgs={len(self._messages)}>"


class _RecordingSMTP(SMTP):
    """aiosmtpd's SMTP, tracked by its owner so ``down()`` can drop live sessions."""

    def __init__(self, owner: DownstreamSMTP, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:  # not the second call made after STARTTLS
            self._owner._sessions.add(self)
            self._owner.connections += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._owner._sessions.discard(self)
        super().connection_lost(error)


@contextlib.contextmanager
def running_downstream(**kwargs: Any) -> Iterator[DownstreamSMTP]:
    """``with running_downstream(users={...}) as srv:`` — thread mode, stopped on exit."""
    srv = DownstreamSMTP(**kwargs)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for things that need a port before starting)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
