"""Durable intake: a message is accepted only once its bytes are on disk and its row committed.

``Spool.accept`` queues the message for the committer, a loop that takes whatever messages
concurrent sessions have queued meanwhile and makes them durable together (group commit) in one
worker thread: it writes each to ``spool/YYYYMMDD/QUEUEID.eml`` (temp file, then rename, so a
crash never leaves a partial file under a real name), runs one ``syncfs`` of the spool's
filesystem that flushes every file of the batch and its folder entry, then commits their rows
in one transaction, and only then does each client get its 250. One thread hop per batch, not
one per message, keeps the event loop (the SMTP sessions) free; one filesystem flush per batch
instead of an fsync of every file and of its folder is what lets many clients be answered at
Postfix's pace (bench/README.md). Each 250 still means "bytes on disk and row committed". If
anything fails, the files of the failed batch are removed and the caller answers 451: nothing
is half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import hashlib
import logging
import os
import random
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from mailgw import metrics
from mailgw.db.models import HELD, QUEUED, SPOOLED, Message

log = logging.getLogger(__name__)

SPOOL_DIR = "spool"
MAX_BATCH = 256
SPACE_CHECK_SECONDS = 1.0  # free space is looked up at most this often


_INSERT_MESSAGES = insert(Message.__table__)


class SpoolError(Exception):
    """The message could not be made durable; the client must be told to retry (451)."""


@dataclass
class Incoming:
    """A message as received, with its envelope and where it came from."""

    raw: bytes
    mail_from: str
    rcpt_to: list[str]
    origin: str = "smtp"  # smtp, imap, local
    client_addr: str | None = None
    client_helo: str | None = None
    auth_user: str | None = None
    listener: str | None = None
    trace_headers: bytes = b""
    # For messages the gateway makes itself (DSNs, notifications): skip the pipeline.
    initial_state: str = SPOOLED
    hold_reason: str | None = None
    expires_at: dt.datetime | None = None
    received_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    queue_id: str = field(default_factory=lambda: new_queue_id())


# Seeded from the OS once per process; a getrandom() call for every message cost 5 % of the
# listener's CPU (bench/smtp_throughput.sh). Queue ids need uniqueness, not secrecy.
_queue_id_random = random.Random(secrets.randbits(128))
os.register_at_fork(after_in_child=lambda: _queue_id_random.seed(secrets.randbits(128)))


def new_queue_id() -> str:
    """Sortable by time, unique across nodes: 11 hex digits of milliseconds + 6 random."""
    return f"{int(time.time() * 1000):011X}{_queue_id_random.getrandbits(24):06X}"


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path | str, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to a temporary file and rename it to ``path``; durable only with
    ``fsync`` (of the file; the folder entry needs its own fsync or a filesystem sync)."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the filesystem holding ``path`` (data, inodes, folders).

    Linux ``syncfs(2)``, which reports write-back errors since 5.8; elsewhere ``sync()``.
    """
    if _libc is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}")
    finally:
        os.close(fd)


def write_durably(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (temp, fsync, rename, fsync folder)."""
    write_atomically(path, data, fsync=True)
    fsync_dir(os.path.dirname(path))


@dataclass
class _Pending:
    raw: bytes
    row: dict
    path: str
    future: asyncio.Future[str]
    error: SpoolError | None = None  # set by the committer when this message's file failed


class Spool:
    def __init__(self, data_dir: Path, sessions: sessionmaker[Session], min_free_mb: int = 0):
        self.data_dir = data_dir
        self.root = data_dir / SPOOL_DIR
        self._data_dir_text = str(data_dir)
        self.sessions = sessions
        self.min_free_bytes = min_free_mb * 1024 * 1024
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._known_dirs: set[str] = set()
        self.in_flight = 0
        self._free = 0
        self._space_checked_at = -SPACE_CHECK_SECONDS
        # The committer's thread of its own: never queued behind pipeline or API work.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._connection: Connection | None = None  # the committer's, see _insert
        self.on_committed: Callable[[], None] | None = None  # wakes the pipeline

    @staticmethod
    def relative_path(queue_id: str, when: dt.datetime) -> str:
        """Where a message's file lives, relative to the data folder (its ``spool_path``)."""
        return f"{SPOOL_DIR}/{when.year:04d}{when.month:02d}{when.day:02d}/{queue_id}.eml"

    def _ensure_dir(self, folder: str) -> None:
        if folder not in self._known_dirs:
            os.makedirs(folder, exist_ok=True)
            fsync_dir(os.path.dirname(folder))
            self._known_dirs.add(folder)

    def _check_space(self) -> None:
        if not self.min_free_bytes:
            return
        now = time.monotonic()
        if now - self._space_checked_at > SPACE_CHECK_SECONDS:
            self._free = shutil.disk_usage(self.data_dir).free
            self._space_checked_at = now
        if self._free < self.min_free_bytes:
            raise SpoolError(f"only {self._free // (1024 * 1024)} MiB free on the data disk")

    def _write_file(self, item: _Pending) -> None:
        """Write one message of a batch (the batch's sync makes it durable), or mark it failed."""
        try:
            self._check_space()
            self._ensure_dir(os.path.dirname(item.path))
            write_atomically(item.path, item.raw)
        except SpoolError as exc:
            item.error = exc
        except OSError as exc:
            item.error = SpoolError(f"cannot write the spool file: {exc.strerror or exc}")
        else:
            item.row["sha256"] = hashlib.sha256(item.raw).hexdigest()

    async def accept(self, msg: Incoming) -> str:
        """Make ``msg`` durable; return its queue id. Raises SpoolError on any failure."""
        self.in_flight += 1
        try:
            relative = self.relative_path(msg.queue_id, msg.received_at)
            row = self._row(msg, relative, "")
            loop = asyncio.get_running_loop()
            item = _Pending(msg.raw, row, f"{self._data_dir_text}/{relative}", loop.create_future())
            self._pending.append(item)
            if self._flusher is None or self._flusher.done():
                self._flusher = loop.create_task(self._flush_loop())
            return await item.future
        finally:
            self.in_flight -= 1

    def prepare(self, msg: Incoming) -> dict:
        """Write ``msg`` durably now (in the calling thread) and return its row, for a caller
        that inserts it in a transaction of its own (the pipeline, with its notifications)."""
        relative = self.relative_path(msg.queue_id, msg.received_at)
        path = f"{self._data_dir_text}/{relative}"
        self._ensure_dir(os.path.dirname(path))
        write_durably(path, msg.raw)
        return self._row(msg, relative, hashlib.sha256(msg.raw).hexdigest())

    def _row(self, msg: Incoming, spool_path: str, digest: str) -> dict:
        now = msg.received_at
        row = {
            "queue_id": msg.queue_id,
            "origin": msg.origin,
            "received_at": now,
            "mail_from": msg.mail_from,
            "rcpt_to": list(msg.rcpt_to),
            "client_addr": msg.client_addr,
            "client_helo": msg.client_helo,
            "auth_user": msg.auth_user,
            "listener": msg.listener,
            "size": len(msg.raw),
            "spool_path": spool_path,
            "sha256": digest,
            "trace_headers": msg.trace_headers,
            "added_headers": b"",
            "state": msg.initial_state,
            "process_attempts": 0,
            "relay_attempts": 0,
            "dsn_sent": False,
        }
        if msg.initial_state in (QUEUED, HELD):
            row["next_attempt_at"] = now
            row["expires_at"] = msg.expires_at
            row["processed_at"] = now
            row["hold_reason"] = msg.hold_reason
        return row

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                await loop.run_in_executor(self._writer, self._make_durable, batch)
            except Exception as exc:
                log.error("spool commit failed for %d message(s): %s", len(batch), exc)
                await loop.run_in_executor(self._writer, self._discard, [p.path for p in batch])
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(SpoolError(f"database unavailable: {exc}"))
                continue
            for p in batch:
                if p.future.done():
                    continue
                if p.error is not None:
                    p.future.set_exception(p.error)
                else:
                    metrics.ACCEPTED.labels(p.row["origin"]).inc()
                    p.future.set_result(p.row["queue_id"])
            if self.on_committed is not None:
                self.on_committed()

    def _make_durable(self, batch: list[_Pending]) -> None:
        """Write the batch's files, flush the filesystem once, commit the rows of the files
        that were written; runs in the committer's thread."""
        for item in batch:
            self._write_file(item)
        rows = [p.row for p in batch if p.error is None]
        if not rows:
            return
        sync_filesystem(self.root)  # every file of the batch and its folder entry: on disk
        self._insert(rows)

    def _insert(self, rows: list[dict]) -> None:
        """Commit ``rows`` on the committer's own connection, kept open between batches:
        taking one from the pool and setting it up for every batch was a third of the
        committer's time, and the committer holds the interpreter lock the SMTP sessions
        need. A connection the server dropped is replaced once before giving up."""
        for attempt in (1, 2):
            if self._connection is not None and self._connection.invalidated:
                self._close_connection()  # hands the dead one back to the pool
            connection = self._connection
            if connection is None:
                connection = self._connection = self.sessions.kw["bind"].connect()
            try:
                with connection.begin():  # Core insert: no ORM unit of work
                    connection.execute(_INSERT_MESSAGES, rows)
                return
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise

    def _discard(self, paths: list[str]) -> None:
        for path in paths:
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            except OSError as exc:  # the row was not committed: the file is only garbage
                log.warning("cannot remove uncommitted spool file %s: %s", path, exc)

    def close(self) -> None:
        self._writer.submit(self._close_connection).result()
        self._writer.shutdown(wait=True)

    def _close_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(DBAPIError):
                self._connection.close()
            self._connection = None

    def read(self, spool_path: str) -> bytes:
        return (self.data_dir / spool_path).read_bytes()
