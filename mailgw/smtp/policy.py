"""Who may send what: plain functions and small counters, no sockets."""

from __future__ import annotations

import ipaddress
import time
from collections import defaultdict, deque
from dataclasses import dataclass


class Networks:
    """A set of networks in CIDR form; ``contains`` answers for an address string."""

    MEMORY = 4096  # answers kept per address; a connection per message asks for each

    def __init__(self, cidrs: list[str]):
        self._nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        self._answers: dict[str, bool] = {}

    def contains(self, addr: str | None) -> bool:
        if not addr:
            return False
        answer = self._answers.get(addr)
        if answer is None:
            if len(self._answers) >= self.MEMORY:
                self._answers.clear()
            answer = self._answers[addr] = self._look_up(addr)
        return answer

    def _look_up(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self._nets)


def address_domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def is_internal(address: str, domains: list[str]) -> bool:
    """True when the address is in one of ``domains`` or one of their subdomains."""
    domain = address_domain(address)
    return any(domain == d or domain.endswith("." + d) for d in domains)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reply: str = "250 2.1.5 OK"


def check_recipient(
    rcpt: str, *, domains: list[str], trusted: bool, authenticated: bool, count: int, maximum: int
) -> Verdict:
    """Decide on one RCPT TO. ``count`` is how many recipients were accepted before it."""
    if count >= maximum:
        return Verdict(False, f"452 4.5.3 Too many recipients (at most {maximum})")
    if "@" not in rcpt or rcpt.startswith("@") or rcpt.endswith("@"):
        return Verdict(False, "553 5.1.3 Recipient address must be user@domain")
    if not (trusted or authenticated or is_internal(rcpt, domains)):
        return Verdict(False, "550 5.7.1 Relaying denied: authenticate or send to a local domain")
    return Verdict(True)


def check_size(declared: int | None, maximum: int) -> Verdict:
    if declared is not None and declared > maximum:
        return Verdict(False, f"552 5.3.4 Message size exceeds the limit of {maximum} bytes")
    return Verdict(True, "250 2.1.0 OK")


def find_bare_line_ending(data: bytes) -> str | None:
    """Name the first kind of bare CR or LF in ``data``, or None when every line ends CRLF.

    A bare CR or LF is how SMTP smuggling hides a second message inside the first one
    (``\\n.\\n``, ``\\r.\\r``, ``\\r\\n.\\n`` …); we refuse the whole message instead of guessing.
    """
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf:
        return "bare LF"
    if data.count(b"\r") != crlf:
        return "bare CR"
    return None


def dot_unstuff(data: bytes) -> bytes:
    """Undo SMTP transparency (RFC 5321 4.5.2): a leading dot on a line is removed."""
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", b"\r\n")


class ConnectionCounter:
    """Open connections in total and per client address."""

    def __init__(self, maximum: int, per_client: int):
        self.maximum = maximum
        self.per_client = per_client
        self.total = 0
        self.by_client: dict[str, int] = defaultdict(int)

    def open(self, client: str) -> str | None:
        """Count a new connection; return a 421 reply when it must be refused (not counted)."""
        if self.total >= self.maximum:
            return "421 4.7.0 Too many connections, try again later"
        if self.by_client[client] >= self.per_client:
            return "421 4.7.0 Too many connections from your address, try again later"
        self.total += 1
        self.by_client[client] += 1
        return None

    def close(self, client: str) -> None:
        self.total -= 1
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]


class RateLimiter:
    """At most ``limit`` events per client in any ``window`` seconds (0: unlimited)."""

    def __init__(self, limit: int, window: float = 60.0):
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = defaultdict(deque)

    def allow(self, client: str, now: float | None = None) -> bool:
        if not self.limit:
            return True
        now = time.monotonic() if now is None else now
        events = self._events[client]
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True
