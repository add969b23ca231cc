"""The SMTP side of the gateway: listeners, their policy and the spool behind them."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.orm import Session, sessionmaker

from mailgw import accounts
from mailgw.config import Config
from mailgw.smtp.policy import ConnectionCounter, Networks, RateLimiter
from mailgw.smtp.server import (
    CredentialCache,
    GatewayHandler,
    IngressPolicy,
    ListenerKind,
    server_tls_context,
    start_listener,
)
from mailgw.spool import Spool

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 30.0


class Ingress:
    def __init__(self, config: Config, sessions: sessionmaker[Session], spool: Spool):
        self.config = config
        self.sessions = sessions
        self.spool = spool
        smtp = config.smtp
        policy = IngressPolicy(
            hostname=config.hostname,
            domains=smtp.domains,
            trusted=Networks(smtp.trusted_networks),
            max_message_size=smtp.max_message_size,
            max_recipients=smtp.max_recipients,
            connections=ConnectionCounter(smtp.max_connections, smtp.max_connections_per_client),
            rate=RateLimiter(smtp.max_messages_per_minute_per_client),
        )
        self.handler = GatewayHandler(spool, policy)
        self.servers: list[asyncio.Server] = []
        self.listening: dict[str, tuple[str, int]] = {}
        self.credentials = CredentialCache(self._check_credentials)

    async def _check_credentials(self, username: str, password: str) -> bool:
        def run() -> bool:
            with self.sessions() as session:
                return accounts.check_credentials(session, username, password)

        return await asyncio.to_thread(run)

    async def start(self) -> None:
        smtp = self.config.smtp
        tls = None
        if smtp.tls_cert and smtp.tls_key:
            tls = server_tls_context(str(smtp.tls_cert), str(smtp.tls_key))
        listeners = [
            (smtp.listen, ListenerKind("relay", tls_context=tls)),
            (smtp.submission_listen, ListenerKind("submission", tls_context=tls, auth=True)),
            (
                smtp.smtps_listen,
                ListenerKind("smtps", tls_context=tls, implicit_tls=True, auth=True),
            ),
        ]
        for listen, kind in listeners:
            if listen is None:
                continue
            server = await start_listener(
                self.handler, kind, listen.host, listen.port, self.credentials, smtp.timeout
            )
            self.servers.append(server)
            sock = server.sockets[0].getsockname()
            self.listening[kind.name] = (sock[0], sock[1])
            log.info("SMTP %s listener on %s:%s", kind.name, sock[0], sock[1])

    async def drain(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop accepting (421 to idle sessions), let messages in DATA finish."""
        self.handler.shutting_down = True
        for server in self.servers:
            server.close()
        for session in list(self.handler.sessions):
            if not session.busy:
                session.close_now("421 4.3.2 Service shutting down, try again later")
        deadline = asyncio.get_running_loop().time() + grace
        while (self.handler.sessions or self.spool.in_flight) and (
            asyncio.get_running_loop().time() < deadline
        ):
            await asyncio.sleep(0.05)
