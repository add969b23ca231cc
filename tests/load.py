"""Concurrent SMTP clients for load, crash and multi-node tests (loopback, bounded)."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable


class Senders:
    """``clients`` threads sending numbered messages (``message(token)``) round-robin to
    ``ports`` until stopped or ``limit`` messages were tried; ``acked`` maps each token that got
    a 250 to the queue id in that reply."""

    def __init__(
        self,
        ports: list[int],
        clients: int,
        message: Callable[[str], bytes],
        *,
        prefix: str,
        mail_from: str = "a@example.gov.vn",
        rcpt: str = "b@example.gov.vn",
        limit: int = 10_000,
    ):
        self.ports, self.message, self.prefix, self.limit = ports, message, prefix, limit
        self.mail_from, self.rcpt = mail_from, rcpt
        self.acked: dict[str, str] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.count = 0
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def __enter__(self) -> Senders:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _next(self) -> int | None:
        with self.lock:
            if self.count >= self.limit:
                return None
            self.count += 1
            return self.count - 1

    def _run(self, client: int) -> None:
        port = self.ports[client % len(self.ports)]
        while not self.stop.is_set():
            n = self._next()
            if n is None:
                return
            token = f"{self.prefix}-{n}"
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                    s.ehlo("client.test")
                    s.mail(self.mail_from)
                    s.rcpt(self.rcpt)
                    code, reply = s.data(self.message(token))
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)
                continue
            if code == 250:
                with self.lock:
                    self.acked[token] = reply.decode().rsplit(" ", 1)[-1]

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count and time.monotonic() < deadline:
            time.sleep(0.01)
