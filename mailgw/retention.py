"""Retention: removing raw messages once ``storage.retention_days`` have passed.

What goes: the spool file of every message in a finished state (relayed, bounced, rejected,
deleted) that arrived more than N days ago, and the blob of its raw bytes in the archive when
nothing else needs that blob: no register entry or repeated arrival of a message that still
needs its raw bytes (younger, or not finished) names the same raw digest, and no register entry
uses the digest as its document (documents are kept for good; a message without files is
registered as a document itself, so its raw blob stays). Every removed blob is recorded in
``purged_blobs``, so verification knows its absence is deliberate; the message is marked with
``raw_purged_at``. Messages still spooled, processing, queued, sending, deferred or held are
never touched.

The work goes in batches of BATCH_SIZE messages (ascending id), each in this order:

1. record the blobs about to go (``purged_blobs``, one row per digest; committed);
2. remove the spool files (their folders fsync'd) and those blobs; a file already gone is fine;
3. mark the messages (``raw_purged_at``; committed).

So a raw blob is never missing without its record, and a message is never marked while its
spool file may still be there. A crash after step 1 leaves recorded blobs that are still
present (verification accepts both); a crash after step 2 leaves unmarked messages whose files
are gone: they are still due, so the next run takes them again, finds their files gone and marks
them. Runs at the same time (several nodes, or the CLI beside ``serve``) only repeat each
other's work. A file that cannot be removed (permissions) leaves its message unmarked: it is
tried again next run.

Known gap: a message whose raw bytes are identical to a purged one's, registered during the
moment between steps 1 and 2, finds the blob present and does not write it again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from mailgw.aio import wait_any
from mailgw.db.models import DONE_STATES, Message, utcnow
from mailgw.registry.blobs import BlobStore
from mailgw.registry.models import PurgedBlob, RegisterArrival, RegisterEntry
from mailgw.registry.numbering import insert_missing
from mailgw.spool import SPOOL_DIR, fsync_dir

log = logging.getLogger(__name__)

BATCH_SIZE = 500
REASON = "retention: raw message"
FIRST_RUN_DELAY_SECONDS = 60.0  # `serve` prunes this soon after start, then every interval


@dataclass
class PruneResult:
    cutoff: dt.datetime  # messages that arrived before this time were due
    messages: int = 0  # messages marked purged (dry run: that would be)
    spool_files: int = 0  # spool files removed
    raw_blobs: int = 0  # raw-message blobs removed
    bytes_freed: int = 0
    failed: int = 0  # files that could not be removed: their messages wait for the next run

    def __str__(self) -> str:
        return (
            f"{self.spool_files} spool file(s) and {self.raw_blobs} raw blob(s), "
            f"{self.bytes_freed} bytes ({self.messages} message(s))"
        )


@dataclass(frozen=True)
class _Due:
    id: int
    spool_path: str
    sha256: str


def _is_due(cutoff: dt.datetime) -> ColumnElement[bool]:
    return and_(Message.state.in_(DONE_STATES), Message.received_at < cutoff)


def _needs_raw(cutoff: dt.datetime) -> ColumnElement[bool]:
    """Messages that keep their raw bytes in this run: not purged and not due."""
    return and_(
        Message.raw_purged_at.is_(None),
        or_(Message.state.not_in(DONE_STATES), Message.received_at >= cutoff),
    )


def _next_batch(session: Session, cutoff: dt.datetime, after_id: int, limit: int) -> list[_Due]:
    rows = session.execute(
        select(Message.id, Message.spool_path, Message.sha256)
        .where(Message.raw_purged_at.is_(None), Message.id > after_id, _is_due(cutoff))
        .order_by(Message.id)
        .limit(limit)
    ).all()
    return [_Due(*row) for row in rows]


def _digests_in_use(session: Session, digests: set[str], cutoff: dt.datetime) -> set[str]:
    """Those of ``digests`` that are a document, or the raw message of a message that keeps it."""
    documents = select(RegisterEntry.sha256).where(RegisterEntry.sha256.in_(digests))
    used = set(session.scalars(documents))
    for table in (RegisterEntry, RegisterArrival):
        used |= set(
            session.scalars(
                select(table.raw_sha256)
                .join(Message, Message.id == table.message_row_id)
                .where(table.raw_sha256.in_(digests), _needs_raw(cutoff))
            )
        )
    return used


def _stored_blobs(store: BlobStore, batch: list[_Due]) -> dict[str, int]:
    """The batch's raw digests that are in the archive: digest -> size."""
    sizes = {m.sha256: store.size(m.sha256) for m in batch}
    return {digest: size for digest, size in sizes.items() if size is not None}


def _record_blobs(
    sessions: sessionmaker[Session], digests: Iterable[str], days: int, now: dt.datetime
) -> None:
    rows = [
        {"sha256": d, "purged_at": now, "reason": REASON, "retention_days": days} for d in digests
    ]
    if rows:
        with sessions() as session, session.begin():
            insert_missing(session, PurgedBlob, rows)


def _spool_file(data_dir: Path, spool_path: str) -> Path | None:
    """The spool file's path; None for a path outside the spool (never removed)."""
    path = (data_dir / spool_path).resolve()
    return path if path.is_relative_to((data_dir / SPOOL_DIR).resolve()) else None


def _remove_spool_files(
    data_dir: Path, batch: list[_Due], result: PruneResult, dry_run: bool
) -> list[int]:
    """Remove the batch's spool files; return the ids of the messages whose file is gone."""
    gone: list[int] = []
    folders: set[Path] = set()
    for m in batch:
        path = _spool_file(data_dir, m.spool_path)
        if path is None:
            log.warning("retention: message %d: spool path %r is outside the spool; left alone",
                        m.id, m.spool_path)  # fmt: skip
            result.failed += 1
            continue
        try:
            size = path.stat().st_size
            if not dry_run:
                path.unlink()
                folders.add(path.parent)
        except FileNotFoundError:
            pass  # removed by an earlier, interrupted run
        except OSError as exc:
            log.warning("retention: cannot remove %s: %s", path, exc)
            result.failed += 1
            continue
        else:
            result.spool_files += 1
            result.bytes_freed += size
        gone.append(m.id)
    for folder in folders:  # the removals are durable before the messages are marked
        fsync_dir(folder)
    return gone


def _remove_blobs(
    store: BlobStore, blobs: dict[str, int], result: PruneResult, dry_run: bool
) -> None:
    for digest, size in blobs.items():
        try:
            removed = dry_run or store.delete(digest)
        except OSError as exc:  # recorded but still there: harmless, and reported
            log.warning("retention: cannot remove blob %s: %s", digest, exc)
            result.failed += 1
            continue
        if removed:
            result.raw_blobs += 1
            result.bytes_freed += size


def _mark(sessions: sessionmaker[Session], ids: list[int], now: dt.datetime) -> int:
    if not ids:
        return 0
    with sessions() as session, session.begin():
        marked = session.execute(
            update(Message)
            .where(Message.id.in_(ids), Message.raw_purged_at.is_(None))
            .values(raw_purged_at=now)
        )
    return marked.rowcount


def prune(
    sessions: sessionmaker[Session],
    data_dir: Path,
    store: BlobStore,
    days: int,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    batch_size: int = BATCH_SIZE,
    stop: Callable[[], bool] = lambda: False,
) -> PruneResult:
    """Remove the raw bytes of finished messages older than ``days`` days (see the module's
    docstring for what and in which order). ``dry_run`` counts without changing anything;
    ``stop`` is asked between batches."""
    if days < 1:
        raise ValueError("retention needs at least one day")
    now = now or utcnow()
    result = PruneResult(cutoff=now - dt.timedelta(days=days))
    after_id = 0
    counted: set[str] = set()  # dry run: blobs already counted (they stay in the store)
    while not stop():
        with sessions() as session:
            batch = _next_batch(session, result.cutoff, after_id, batch_size)
        if not batch:
            break
        after_id = batch[-1].id
        blobs = _stored_blobs(store, [m for m in batch if m.sha256 not in counted])
        if blobs:
            with sessions() as session:
                used = _digests_in_use(session, set(blobs), result.cutoff)
            blobs = {digest: size for digest, size in sorted(blobs.items()) if digest not in used}
        if not dry_run:
            _record_blobs(sessions, blobs, days, now)
        gone = _remove_spool_files(data_dir, batch, result, dry_run)
        _remove_blobs(store, blobs, result, dry_run)
        if dry_run:
            counted.update(blobs)
            result.messages += len(gone)
        else:
            result.messages += _mark(sessions, gone, now)
    return result


async def prune_periodically(
    run: Callable[[], PruneResult], interval_seconds: float, stopping: asyncio.Event
) -> None:
    """``serve``'s task: ``run`` (a prune) in a thread, soon after start and then every
    ``interval_seconds``, until ``stopping`` is set. A failed run is logged and tried again."""
    delay = min(FIRST_RUN_DELAY_SECONDS, interval_seconds)
    while True:
        await wait_any(stopping, timeout=delay)
        if stopping.is_set():
            return
        delay = interval_seconds
        try:
            result = await asyncio.to_thread(run)
        except Exception:
            log.exception("retention: pruning failed; trying again in %.0f s", interval_seconds)
            continue
        if result.messages or result.failed:
            log.info("retention: removed %s; %d file(s) could not be removed",
                     result, result.failed)  # fmt: skip
        else:
            log.debug("retention: nothing to remove (before %s)", result.cutoff)
