"""The pipeline worker: takes spooled messages, runs the stages, and queues them for relay.

At-least-once: a worker leases a batch of messages, processes each and marks it done in one
transaction that checks it still holds the lease. A crash means the lease runs out and the
message is processed again; every stage is a function of the message alone, so running it twice
gives the same result. Stages run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailgw import metrics
from mailgw.aio import wait_any
from mailgw.db.models import (
    HELD,
    PROCESSING,
    QUEUED,
    SPOOLED,
    Message,
    utcnow,
)
from mailgw.lease import kept_alive
from mailgw.mime.model import ParsedMessage
from mailgw.spool import Incoming, Spool

log = logging.getLogger(__name__)

NO_RELAY_HOST = "no relay host configured"
MAX_PROCESS_ATTEMPTS = 5
BURST_PAUSE_SECONDS = 0.2  # between messages while mail pours in (see mailgw/intake.py)


def node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class Job:
    """One message going through the stages; stages read and fill its fields."""

    id: int
    queue_id: str
    mail_from: str
    rcpt_to: list[str]
    client_addr: str | None
    auth_user: str | None
    listener: str | None
    received_at: dt.datetime
    raw: bytes
    parsed: ParsedMessage | None = None
    category: str | None = None
    tags: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)  # added when relaying
    decision: dict[str, Any] | None = None
    rules_version: str | None = None
    extra_rcpts: list[str] = field(default_factory=list)
    hold_reason: str | None = None
    bounce_reason: str | None = None
    signature: dict[str, Any] | None = None  # filled by the signature stage (issue 4)
    registers: list[str] = field(default_factory=list)
    notifications: list[Any] = field(default_factory=list)
    registered: list[Any] = field(default_factory=list)  # what the register stage numbered
    outbound: list[Incoming] = field(default_factory=list)  # notifications to spool with it


Stage = Callable[[Job], None]


def parse_stage(job: Job) -> None:
    from mailgw.mime.parse import parse_message

    job.parsed = parse_message(job.raw)


def trace_stage(job: Job) -> None:
    job.headers.insert(0, ("X-Mailgw-Queue-Id", job.queue_id))
    if job.category:
        job.headers.append(("X-Mailgw-Category", job.category))
    if job.tags:
        job.headers.append(("X-Mailgw-Tags", ", ".join(job.tags)))
    if job.rules_version:
        job.headers.append(("X-Mailgw-Rules-Version", job.rules_version[:16]))


def encode_headers(headers: list[tuple[str, str]]) -> bytes:
    """Header lines to prepend; values are folded-safe single lines, UTF-8 allowed (RFC 6532)."""
    lines = []
    for name, value in headers:
        clean = " ".join(value.replace("\r", " ").replace("\n", " ").split())
        lines.append(f"{name}: {clean}\r\n")
    return "".join(lines).encode("utf-8")


def attachment_summary(parsed: ParsedMessage | None) -> list[dict[str, Any]]:
    if parsed is None:
        return []
    return [
        {
            "filename": a.filename,
            "content_type": a.content_type,
            "size": a.size,
            "sha256": a.sha256,
            "inline": a.inline,
        }
        for a in parsed.attachments
    ]


class Pipeline:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        spool: Spool,
        stages: list[Stage],
        *,
        relay_enabled: bool,
        lifetime: dt.timedelta,
        workers: int = 2,
        lease_seconds: int = 300,
        poll_seconds: float = 1.0,
        owner: str | None = None,
    ):
        self.sessions = sessions
        self.spool = spool
        self.stages = stages
        self.relay_enabled = relay_enabled
        self.lifetime = lifetime
        self.workers = workers
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.poll_seconds = poll_seconds
        self.owner = owner or node_id()
        self.wakeup = asyncio.Event()
        self.on_processed: Callable[[], None] | None = None
        self.intake_bursting: Callable[[], bool] | None = None  # step back while true

    # --- leasing

    def claim(self, limit: int) -> list[int]:
        now = utcnow()
        with self.sessions() as session, session.begin():
            candidates = (
                select(Message.id)
                .where(
                    or_(
                        Message.state == SPOOLED,
                        (Message.state == PROCESSING) & (Message.lease_until < now),
                    )
                )
                .order_by(Message.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            ids = list(session.scalars(candidates))
            if ids:
                session.execute(
                    update(Message)
                    .where(Message.id.in_(ids))
                    .values(
                        state=PROCESSING,
                        lease_owner=self.owner,
                        lease_until=now + self.lease,
                        process_attempts=Message.process_attempts + 1,
                    )
                )
            return ids

    # --- processing one message

    def load(self, message_id: int) -> tuple[Job, int] | None:
        with self.sessions() as session:
            row = session.get(Message, message_id)
            if row is None or row.lease_owner != self.owner or row.state != PROCESSING:
                return None
            job = Job(
                id=row.id,
                queue_id=row.queue_id,
                mail_from=row.mail_from,
                rcpt_to=list(row.rcpt_to),
                client_addr=row.client_addr,
                auth_user=row.auth_user,
                listener=row.listener,
                received_at=row.received_at,
                raw=self.spool.read(row.spool_path),
            )
            return job, row.process_attempts

    def process(self, message_id: int) -> None:
        loaded = self.load(message_id)
        if loaded is None:
            return
        job, attempts = loaded
        started = time.perf_counter()
        try:
            for stage in self.stages:
                t0 = time.perf_counter()
                stage(job)
                metrics.STAGE_SECONDS.labels(metrics.stage_name(stage)).observe(
                    time.perf_counter() - t0
                )
        except Exception as exc:
            log.exception("%s: processing failed (attempt %d)", job.queue_id, attempts)
            metrics.PROCESSING_FAILED.inc()
            self._failed(job, attempts, exc)
            return
        metrics.PROCESSING_SECONDS.observe(time.perf_counter() - started)
        self._finish(job)

    def _finish(self, job: Job) -> None:
        parsed = job.parsed
        values: dict[str, Any] = {
            "message_id": parsed.message_id if parsed else None,
            "subject": parsed.subject if parsed else None,
            "header_from": ", ".join(a.addr for a in parsed.from_) if parsed else None,
            "attachments": attachment_summary(parsed),
            "category": job.category,
            "tags": job.tags,
            "decision": job.decision,
            "rules_version": job.rules_version,
            "signature": job.signature,
            "added_headers": encode_headers(job.headers),
            "processed_at": utcnow(),
            "lease_owner": None,
            "lease_until": None,
        }
        if job.extra_rcpts:
            values["rcpt_to"] = job.rcpt_to + [r for r in job.extra_rcpts if r not in job.rcpt_to]
        values.update(self._route(job))
        # Notifications are written before, and their rows committed with, the message's own
        # update: processed exactly once in effect, however often the stages ran.
        outbound = [self.spool.prepare(m) for m in job.outbound]
        with self.sessions() as session, session.begin():
            done = session.execute(
                update(Message)
                .where(Message.id == job.id, Message.lease_owner == self.owner)
                .values(**values)
            )
            if done.rowcount != 1:
                log.warning("%s: lease lost before it was marked processed", job.queue_id)
                return
            if outbound:
                session.execute(insert(Message), outbound)
        metrics.PROCESSED.inc()
        if self.on_processed:
            self.on_processed()

    def _route(self, job: Job) -> dict[str, Any]:
        if job.bounce_reason:
            return self._bounce_route(job)
        if job.hold_reason:
            return {"state": HELD, "hold_reason": job.hold_reason}
        if not self.relay_enabled:
            return {"state": HELD, "hold_reason": NO_RELAY_HOST}
        now = utcnow()
        return {
            "state": QUEUED,
            "next_attempt_at": now,
            "expires_at": job.received_at + self.lifetime,
        }

    def _bounce_route(self, job: Job) -> dict[str, Any]:
        """Refused by a rule: every recipient fails permanently; the relay queue sends the DSN."""
        now = utcnow()
        reason = f"refused by the gateway's rules: {job.bounce_reason}"
        status = {
            r: {"status": "perm", "code": 550, "message": f"550 5.7.1 {reason}",
                "enhanced_status": "5.7.1", "at": now.isoformat()}
            for r in job.rcpt_to + job.extra_rcpts
        }  # fmt: skip
        if not self.relay_enabled:
            return {"state": HELD, "hold_reason": reason, "rcpt_status": status}
        return {"state": QUEUED, "next_attempt_at": now, "rcpt_status": status,
                "expires_at": job.received_at + self.lifetime}  # fmt: skip

    def _failed(self, job: Job, attempts: int, exc: Exception) -> None:
        values: dict[str, Any] = {
            "last_error": f"processing: {type(exc).__name__}: {exc}"[:2000],
            "last_error_at": utcnow(),
            "lease_owner": None,
            "lease_until": None,
        }
        if attempts >= MAX_PROCESS_ATTEMPTS:
            # Never lose it: keep it for a person to look at (`mailgw queue`).
            values.update(state=HELD, hold_reason=f"processing failed {attempts} times")
        else:
            values.update(state=SPOOLED)
        with self.sessions() as session, session.begin():
            session.execute(
                update(Message)
                .where(Message.id == job.id, Message.lease_owner == self.owner)
                .values(**values)
            )

    # --- the worker loop

    async def run(self, stopping: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._worker(stopping)) for _ in range(self.workers)]
        await asyncio.gather(*tasks)

    async def _worker(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                ids = await asyncio.to_thread(self.claim, 8)
            except Exception as exc:
                log.error("pipeline cannot claim work: %s", exc)
                ids = []
            if not ids:
                self.wakeup.clear()
                await wait_any(stopping, self.wakeup, timeout=self.poll_seconds)
                continue
            async with kept_alive(self.sessions, ids, self.owner, self.lease):
                for message_id in ids:
                    if self.intake_bursting is not None and self.intake_bursting():
                        await asyncio.sleep(BURST_PAUSE_SECONDS)
                    # Finish the whole leased batch even when stopping: it is in flight.
                    try:
                        await asyncio.to_thread(self.process, message_id)
                    except Exception:
                        log.exception("pipeline: message %s", message_id)


def release_held_for_relay(session: Session, lifetime: dt.timedelta) -> int:
    """Messages held only because no relay host was configured go to the queue (at start)."""
    now = utcnow()
    result = session.execute(
        update(Message)
        .where(Message.state == HELD, Message.hold_reason == NO_RELAY_HOST)
        .values(state=QUEUED, hold_reason=None, next_attempt_at=now, expires_at=now + lifetime)
    )
    return result.rowcount or 0
