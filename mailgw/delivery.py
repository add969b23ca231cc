"""The relay queue: leases queued messages, delivers them downstream, retries, bounces.

Per-recipient state lives in ``Message.rcpt_status``; a retry only sends to recipients that are
still pending. A temporary failure defers the message with exponential backoff until its
lifetime runs out; a permanent failure or expiry sends a DSN (RFC 3464) to the envelope sender
(never to a null sender), spooled like any other message so it cannot be lost either.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailgw import metrics
from mailgw.aio import wait_any
from mailgw.db.models import BOUNCED, DEFERRED, QUEUED, RELAYED, SENDING, Message, utcnow
from mailgw.lease import kept_alive
from mailgw.pipeline import node_id
from mailgw.smtp.dsn import DsnRecipient, build_dsn, should_send_dsn
from mailgw.smtp.relay import (
    DeliveryResult,
    RecipientResult,
    RelayTarget,
    deliver,
    next_retry_delay,
)
from mailgw.spool import Incoming

log = logging.getLogger(__name__)

SENT, TEMP, PERM = "sent", "temp", "perm"


@dataclass
class Outgoing:
    id: int
    queue_id: str
    mail_from: str
    rcpt_to: list[str]
    rcpt_status: dict[str, dict[str, Any]]
    received_at: dt.datetime
    expires_at: dt.datetime | None
    attempts: int
    trace: bytes
    raw: bytes

    @property
    def pending(self) -> list[str]:
        return [
            r for r in self.rcpt_to if self.rcpt_status.get(r, {}).get("status") not in (SENT, PERM)
        ]


def original_headers(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[: end + 2]


class RelayQueue:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        read_raw: Callable[[str], bytes],
        target: RelayTarget,
        spool_dsn: Callable[[Incoming], Awaitable[str]],
        *,
        hostname: str,
        postmaster: str,
        lifetime: dt.timedelta,
        retry_initial: float = 60.0,
        retry_max: float = 3600.0,
        workers: int = 4,
        lease_seconds: int = 60,
        poll_seconds: float = 1.0,
        owner: str | None = None,
    ):
        self.sessions = sessions
        self.read_raw = read_raw
        self.target = target
        self.spool_dsn = spool_dsn
        self.hostname = hostname
        self.postmaster = postmaster
        self.lifetime = lifetime
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.workers = workers
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.poll_seconds = poll_seconds
        self.owner = owner or node_id()
        self.wakeup = asyncio.Event()

    def claim(self, limit: int) -> list[Outgoing]:
        now = utcnow()
        with self.sessions() as session, session.begin():
            candidates = (
                select(Message)
                .where(
                    or_(
                        Message.state.in_((QUEUED, DEFERRED)) & (Message.next_attempt_at <= now),
                        (Message.state == SENDING) & (Message.lease_until < now),
                    )
                )
                .order_by(Message.next_attempt_at, Message.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = list(session.scalars(candidates))
            if not rows:
                return []
            session.execute(
                update(Message)
                .where(Message.id.in_([r.id for r in rows]))
                .values(
                    state=SENDING,
                    lease_owner=self.owner,
                    lease_until=now + self.lease,
                    relay_attempts=Message.relay_attempts + 1,
                )
            )
            claimed = []
            for r in rows:
                try:
                    raw = self.read_raw(r.spool_path)
                except OSError as exc:
                    # Leave it deferred for a person to look at; never drop it.
                    log.error("%s: spool file unreadable: %s", r.queue_id, exc)
                    r.state, r.lease_owner = DEFERRED, None
                    r.last_error, r.last_error_at = f"spool file unreadable: {exc}", now
                    r.next_attempt_at = now + dt.timedelta(seconds=self.retry_max)
                    continue
                claimed.append(
                    Outgoing(
                        id=r.id,
                        queue_id=r.queue_id,
                        mail_from=r.mail_from,
                        rcpt_to=list(r.rcpt_to),
                        rcpt_status=dict(r.rcpt_status or {}),
                        received_at=r.received_at,
                        expires_at=r.expires_at,
                        attempts=r.relay_attempts + 1,
                        trace=(r.trace_headers or b"") + (r.added_headers or b""),
                        raw=raw,
                    )
                )
            return claimed

    async def attempt(self, out: Outgoing) -> None:
        pending = out.pending
        if pending:
            result = await deliver(out.trace + out.raw, out.mail_from, pending, self.target)
        else:
            result = DeliveryResult(recipients={})
        now = utcnow()
        for rcpt, res in result.recipients.items():
            out.rcpt_status[rcpt] = _status_dict(res, now)
        expired = out.expires_at is not None and now >= out.expires_at
        still_pending = out.pending
        if expired:
            for rcpt in still_pending:
                entry = out.rcpt_status.setdefault(rcpt, {})
                entry.update(status=PERM, expired=True, at=now.isoformat())
                entry["message"] = "delivery time expired: " + entry.get("message", "")
            still_pending = []
        newly_failed = [
            r
            for r in out.rcpt_to
            if out.rcpt_status.get(r, {}).get("status") == PERM
            and not out.rcpt_status[r].get("dsn")
        ]
        values_dsn = {}
        if newly_failed and await self._bounce(out, newly_failed):
            values_dsn = {"dsn_sent": True}
        values: dict[str, Any] = {
            "rcpt_status": out.rcpt_status,
            "lease_owner": None,
            "lease_until": None,
            **values_dsn,
        }
        errors = [
            out.rcpt_status[r].get("message", "")
            for r in out.rcpt_to
            if out.rcpt_status.get(r, {}).get("status") in (TEMP, PERM)
        ]
        if errors:
            values.update(last_error=errors[0][:2000], last_error_at=now)
        if still_pending:
            delay = next_retry_delay(out.attempts, self.retry_initial, self.retry_max)
            values.update(state=DEFERRED, next_attempt_at=now + dt.timedelta(seconds=delay))
            log.info(
                "%s: deferred %d recipient(s) for %.0fs", out.queue_id, len(still_pending), delay
            )
        else:
            failed = any(out.rcpt_status.get(r, {}).get("status") == PERM for r in out.rcpt_to)
            values.update(
                state=BOUNCED if failed else RELAYED, relayed_at=now, next_attempt_at=None
            )
            log.info("%s: %s", out.queue_id, "bounced" if failed else "relayed")
        await asyncio.to_thread(self._save, out, values)

    async def _bounce(self, out: Outgoing, failed: list[str]) -> bool:
        """Report permanent failures to the sender; True when a DSN was spooled."""
        headers = original_headers(out.raw)
        sent = should_send_dsn(out.mail_from, headers)
        if sent:
            dsn = build_dsn(
                reporting_mta=self.hostname,
                original_mail_from=out.mail_from,
                original_rcpt_results=[_dsn_recipient(r, out.rcpt_status[r]) for r in failed],
                original_headers=headers,
                queue_id=out.queue_id,
                arrival_date=out.received_at,
                action="failed",
                postmaster=self.postmaster,
            )
            await self.spool_dsn(
                Incoming(
                    raw=dsn,
                    mail_from="",
                    rcpt_to=[out.mail_from],
                    origin="local",
                    initial_state=QUEUED,
                    expires_at=utcnow() + self.lifetime,
                )
            )
            log.info(
                "%s: DSN for %d recipient(s) to <%s>", out.queue_id, len(failed), out.mail_from
            )
        for r in failed:
            out.rcpt_status[r]["dsn"] = True  # reported (or nobody to report to)
        return sent

    def _save(self, out: Outgoing, values: dict[str, Any]) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(Message)
                .where(Message.id == out.id, Message.lease_owner == self.owner)
                .values(**values)
            )
        metrics.relay_outcome(values.get("state"))

    def _release(self, out: Outgoing, exc: Exception) -> None:
        """After an unexpected error: back to deferred, so the message is retried, not stuck."""
        now = utcnow()
        delay = next_retry_delay(out.attempts, self.retry_initial, self.retry_max)
        with self.sessions() as session, session.begin():
            session.execute(
                update(Message)
                .where(Message.id == out.id, Message.lease_owner == self.owner)
                .values(
                    state=DEFERRED,
                    lease_owner=None,
                    lease_until=None,
                    next_attempt_at=now + dt.timedelta(seconds=delay),
                    last_error=f"internal error: {type(exc).__name__}: {exc}"[:2000],
                    last_error_at=now,
                )
            )

    async def run(self, stopping: asyncio.Event) -> None:
        await asyncio.gather(*(self._worker(stopping) for _ in range(self.workers)))

    async def _worker(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                batch = await asyncio.to_thread(self.claim, 4)
            except Exception as exc:
                log.error("relay queue cannot claim work: %s", exc)
                batch = []
            if not batch:
                self.wakeup.clear()
                await wait_any(stopping, self.wakeup, timeout=self.poll_seconds)
                continue
            async with kept_alive(self.sessions, [o.id for o in batch], self.owner, self.lease):
                await self._attempt_all(batch)

    async def _attempt_all(self, batch: list[Outgoing]) -> None:
        for out in batch:
            try:
                await self.attempt(out)
            except Exception as exc:
                log.exception("%s: relay attempt failed unexpectedly", out.queue_id)
                await asyncio.to_thread(self._release, out, exc)


def _status_dict(res: RecipientResult, now: dt.datetime) -> dict[str, Any]:
    return {
        "status": res.status,
        "code": res.code,
        "message": res.message,
        "enhanced_status": res.enhanced_status,
        "remote_mta": res.remote_mta,
        "at": now.isoformat(),
    }


def _dsn_recipient(rcpt: str, status: dict[str, Any]) -> DsnRecipient:
    return DsnRecipient(
        rcpt=rcpt,
        status=status.get("status", PERM),
        code=status.get("code"),
        message=status.get("message", ""),
        enhanced_status=status.get("enhanced_status"),
        remote_mta=status.get("remote_mta"),
    )
