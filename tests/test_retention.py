"""Retention: pruning removes the spool files of old finished messages and the raw blobs nobody
else needs, records what it removed, survives a crash between its steps; verification, the API,
the CLI and `serve` know about it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import re
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailgw import retention
from mailgw.cli import main
from mailgw.config import Config
from mailgw.db.models import (
    BOUNCED,
    DEFERRED,
    DELETED,
    HELD,
    PROCESSING,
    QUEUED,
    RELAYED,
    SENDING,
    SPOOLED,
    Message,
    utcnow,
)
from mailgw.registry.audit import verify_archive, verify_registers
from mailgw.registry.blobs import FileBlobStore
from mailgw.registry.models import BODY_PART, PurgedBlob, RegisterArrival
from mailgw.registry.register import Document, register_documents
from mailgw.retention import prune
from mailgw.spool import new_queue_id
from tests.test_api_archive import api, archive, audit_rows, bearer, token
from tests.test_registry_chain import write_config
from tests.test_registry_support import FIELDS, doc, sessions

__all__ = ["archive", "sessions"]

DAYS = 30
UNFINISHED = (SPOOLED, PROCESSING, QUEUED, SENDING, DEFERRED, HELD)


@dataclasses.dataclass
class Msg:
    id: int
    queue_id: str
    path: Path
    raw: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def spool_message(
    sessions: sessionmaker[Session],
    data_dir: Path,
    raw: bytes,
    state: str,
    when: dt.datetime,
) -> Msg:
    """A message row and its spool file, as the spool leaves them."""
    queue_id = new_queue_id()
    path = data_dir / "spool" / when.strftime("%Y%m%d") / f"{queue_id}.eml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    row = {
        "queue_id": queue_id, "spool_path": str(path.relative_to(data_dir)),
        "sha256": hashlib.sha256(raw).hexdigest(), "received_at": when,
        "mail_from": "vanthu@example.gov.vn", "rcpt_to": ["lanhdao@example.gov.vn"],
        "origin": "smtp", "size": len(raw), "trace_headers": b"", "added_headers": b"",
        "state": state, "process_attempts": 1, "relay_attempts": 0, "dsn_sent": False,
    }  # fmt: skip
    with sessions() as session, session.begin():
        message_id = session.execute(insert(Message).returning(Message.id), [row]).scalar_one()
    return Msg(message_id, queue_id, path, raw)


def register(
    sessions: sessionmaker[Session], store: FileBlobStore, m: Msg, content: bytes | None
) -> None:
    """Register ``m`` with one file ``content``, or (None) as a document itself."""
    raw_sha = store.put(m.raw)
    if content is None:
        documents = [
            Document(BODY_PART, None, "message/rfc822", len(m.raw), raw_sha, "body", m.raw)
        ]
    else:
        store.put(content)
        documents = [doc(content)]
    with sessions() as session, session.begin():
        arrival = session.get(Message, m.id).received_at
        register_documents(
            session, "default", arrival=arrival, message_row_id=m.id,
            message_id=f"<{m.queue_id}@t>", raw_sha256=raw_sha, documents=documents,
            fields=FIELDS,
        )  # fmt: skip


@dataclasses.dataclass
class World:
    now: dt.datetime
    data_dir: Path
    store: FileBlobStore
    due: list[Msg]  # finished and older than DAYS: their spool files go
    kept: list[Msg]  # young or unfinished: untouched
    gone_blobs: set[str]  # raw blobs nobody needs any more
    kept_blobs: set[str]  # raw blobs that stay: a document, or needed by a kept message


def build_world(sessions: sessionmaker[Session], tmp_path: Path) -> World:
    now = utcnow()
    old, young = now - dt.timedelta(days=DAYS + 10), now - dt.timedelta(days=DAYS - 5)
    data_dir = tmp_path / "data"
    store = FileBlobStore.in_data_dir(data_dir)

    def new(raw: bytes, state: str, when: dt.datetime = old) -> Msg:
        return spool_message(sessions, data_dir, raw, state, when)

    a = new(b"Subject: a\r\n\r\nold relayed, one file\r\n", RELAYED)
    register(sessions, store, a, b"%PDF a")
    b = new(b"Subject: b\r\n\r\nold bounced, not registered\r\n", BOUNCED)
    c = new(b"Subject: c\r\n\r\nold deleted, registered as a document itself\r\n", DELETED)
    register(sessions, store, c, None)
    shared = b"Subject: f\r\n\r\nthe same bytes arrived twice\r\n"
    f = new(shared, RELAYED)
    register(sessions, store, f, b"%PDF f")
    g = new(shared, RELAYED, young)  # a repeated arrival that is still within retention
    register(sessions, store, g, b"%PDF f")
    twice = b"Subject: h\r\n\r\ntwo old copies in different batches\r\n"
    h1 = new(twice, RELAYED)
    register(sessions, store, h1, b"%PDF h")
    unfinished = [new(b"Subject: %s\r\n\r\nold, %s\r\n" % (s.encode(), s.encode()), s)
                  for s in UNFINISHED]  # fmt: skip
    register(sessions, store, unfinished[-1], b"%PDF held")  # held, registered
    i = new(b"Subject: i\r\n\r\nold relayed, not registered\r\n", RELAYED)
    h2 = new(twice, DELETED)
    register(sessions, store, h2, b"%PDF h")
    d = new(b"Subject: d\r\n\r\nyoung relayed\r\n", RELAYED, young)
    with sessions() as session:
        assert session.scalar(select(RegisterArrival.raw_sha256)) is not None
    return World(
        now=now, data_dir=data_dir, store=store,
        due=[a, b, c, f, h1, i, h2], kept=[g, *unfinished, d],
        gone_blobs={a.sha256, h1.sha256}, kept_blobs={c.sha256, f.sha256, unfinished[-1].sha256},
    )  # fmt: skip


@pytest.fixture
def world(sessions, tmp_path: Path) -> World:
    return build_world(sessions, tmp_path)


def purged_ids(sessions) -> set[int]:
    with sessions() as session:
        return set(session.scalars(select(Message.id).where(Message.raw_purged_at.is_not(None))))


def purged_blobs(sessions) -> dict[str, int | None]:
    with sessions() as session:
        return dict(session.execute(select(PurgedBlob.sha256, PurgedBlob.retention_days)).all())


def expected_bytes(w: World) -> int:
    return sum(len(m.raw) for m in w.due) + sum(len(w.store.get(d)) for d in w.gone_blobs)


def test_prune_removes_old_finished_spool_files_and_unshared_raw_blobs(sessions, world) -> None:
    w = world
    freed = expected_bytes(w)
    result = prune(sessions, w.data_dir, w.store, DAYS, now=w.now, batch_size=2)
    assert (result.messages, result.spool_files, result.raw_blobs) == (7, 7, 2)
    assert result.bytes_freed == freed and result.failed == 0
    assert purged_ids(sessions) == {m.id for m in w.due}
    assert not any(m.path.exists() for m in w.due)
    assert all(m.path.read_bytes() == m.raw for m in w.kept)
    assert not any(w.store.exists(digest) for digest in w.gone_blobs)
    assert all(w.store.exists(digest) for digest in w.kept_blobs)
    assert purged_blobs(sessions) == dict.fromkeys(w.gone_blobs, DAYS)

    again = prune(sessions, w.data_dir, w.store, DAYS, now=w.now)
    assert (again.messages, again.spool_files, again.raw_blobs, again.bytes_freed) == (0, 0, 0, 0)
    assert purged_blobs(sessions) == dict.fromkeys(w.gone_blobs, DAYS)


def test_a_dry_run_counts_the_same_and_changes_nothing(sessions, world) -> None:
    w = world
    dry = prune(sessions, w.data_dir, w.store, DAYS, now=w.now, batch_size=2, dry_run=True)
    assert (dry.messages, dry.spool_files, dry.raw_blobs) == (7, 7, 2)
    assert dry.bytes_freed == expected_bytes(w)
    assert purged_ids(sessions) == set() and purged_blobs(sessions) == {}
    assert all(m.path.exists() for m in w.due + w.kept)
    assert all(w.store.exists(digest) for digest in w.gone_blobs | w.kept_blobs)
    real = prune(sessions, w.data_dir, w.store, DAYS, now=w.now, batch_size=2)
    assert dataclasses.astuple(real) == dataclasses.astuple(dry)


def test_verification_accepts_recorded_purges_only(sessions, world) -> None:
    w = world
    prune(sessions, w.data_dir, w.store, DAYS, now=w.now)
    with sessions() as session:
        [report] = verify_registers(session, w.store)
        archive_report = verify_archive(session, w.store)
    assert report.ok, report.problems
    assert report.purged_raw == w.gone_blobs
    assert archive_report.ok and archive_report.purged == 2

    young = w.kept[0]  # its raw blob was kept for it: removing it by hand is a problem
    w.store.path(young.sha256).unlink()
    with sessions() as session:
        [report] = verify_registers(session, w.store)
        archive_report = verify_archive(session, w.store)
    assert not report.ok and report.first.kind == "blob" and young.sha256 in str(report.first)
    assert [(p.state, p.sha256) for p in archive_report.problems] == [("missing", young.sha256)]

    document = hashlib.sha256(b"%PDF a").hexdigest()  # a document's blob, never purged
    w.store.path(document).unlink()
    with sessions() as session:
        [report] = verify_registers(session, w.store)
        archive_report = verify_archive(session, w.store)
    assert any(document in str(p) for p in report.problems)
    assert ("missing", document) in [(p.state, p.sha256) for p in archive_report.problems]


def test_a_purge_record_does_not_excuse_a_missing_document(sessions, world) -> None:
    w = world
    c = w.due[2]  # registered as a document itself: its raw blob is its document
    w.store.path(c.sha256).unlink()
    with sessions() as session, session.begin():
        session.add(PurgedBlob(sha256=c.sha256, reason="forged", retention_days=DAYS))
    with sessions() as session:
        [report] = verify_registers(session, w.store)
        archive_report = verify_archive(session, w.store)
    assert not report.ok and c.sha256 in str(report.first)
    assert ("missing", c.sha256) in [(p.state, p.sha256) for p in archive_report.problems]


@pytest.mark.parametrize("crash_in", ["_remove_spool_files", "_mark"])
def test_a_crash_between_the_steps_is_finished_by_the_next_run(
    sessions, world, monkeypatch, crash_in: str
) -> None:
    w = world

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(retention, crash_in, crash)
        with pytest.raises(RuntimeError):
            prune(sessions, w.data_dir, w.store, DAYS, now=w.now, batch_size=10)
    assert purged_ids(sessions) == set()  # nothing says "purged" yet
    assert purged_blobs(sessions) == dict.fromkeys(w.gone_blobs, DAYS)  # recorded first
    with sessions() as session:
        [report] = verify_registers(session, w.store)
    assert report.ok, report.problems  # whether or not the recorded blobs are gone yet

    prune(sessions, w.data_dir, w.store, DAYS, now=w.now)
    assert purged_ids(sessions) == {m.id for m in w.due}
    assert not any(m.path.exists() for m in w.due)
    assert not any(w.store.exists(digest) for digest in w.gone_blobs)
    assert all(m.path.exists() for m in w.kept)


def test_cli_archive_prune(sessions, world, tmp_path: Path, database_url: str, capsys) -> None:
    w = world
    freed = expected_bytes(w)
    assert main(["archive", "prune", "-c", write_config(tmp_path, database_url)]) == 0
    out = capsys.readouterr().out
    assert out == "retention is off (storage.retention_days = 0): nothing pruned\n"
    on = write_config(tmp_path, database_url, DAYS)
    assert main(["archive", "prune", "-c", on, "--days", "0"]) == 0
    assert capsys.readouterr().out == "retention is off (--days 0): nothing pruned\n"
    assert main(["archive", "prune", "-c", on, "--days", str(DAYS), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"retention {DAYS} days: finished messages that arrived before 20")
    assert out.endswith(
        f"dry run: would remove 7 spool file(s) and 2 raw blob(s) of 7 message(s), freeing "
        f"{freed} bytes; nothing changed\n"
    )
    assert purged_ids(sessions) == set()
    assert main(["archive", "prune", "-c", on]) == 0
    out = capsys.readouterr().out
    assert out.endswith(
        f"removed 7 spool file(s) and 2 raw blob(s) of 7 message(s), {freed} bytes freed\n"
    )
    assert purged_ids(sessions) == {m.id for m in w.due}

    assert main(["archive", "verify", "-c", on]) == 0
    out = capsys.readouterr().out
    assert out.endswith("0 problem(s), 2 raw message blob(s) removed by retention\n")
    assert main(["register", "verify", "-c", on]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(
        r"default: \d+ entries, chain and numbers OK; 2 raw message blob\(s\) removed by "
        r"retention\n",
        out,
    )


def test_queue_retry_refuses_a_purged_message(
    sessions, world, tmp_path: Path, database_url: str, capsys
) -> None:
    w = world
    prune(sessions, w.data_dir, w.store, DAYS, now=w.now)
    cfg = write_config(tmp_path, database_url, DAYS)
    a = w.due[0]
    with sessions() as session, session.begin():  # as if an administrator forced it back
        session.execute(update(Message).where(Message.id == a.id).values(state=HELD))
    assert main(["queue", "retry", a.queue_id, "-c", cfg]) == 1
    err = capsys.readouterr().err
    assert f"mailgw: {a.queue_id}: its raw message was purged on " in err
    assert "(retention): it cannot be delivered again" in err
    assert main(["queue", "retry", "--all", "-c", cfg]) == 0  # held, deferred, queued: not a
    assert capsys.readouterr().out == "3 message(s) queued for delivery now\n"
    with sessions() as session:
        assert session.get(Message, a.id).state == HELD


async def test_api_raw_of_a_purged_message_is_gone_and_audited(archive) -> None:
    gw = archive
    first = gw.test_data["messages"][0]
    received = utcnow() - dt.timedelta(days=DAYS + 3)
    with gw.sessions() as session, session.begin():
        session.execute(
            update(Message)
            .where(Message.id == first.id)
            .values(state=RELAYED, received_at=received)
        )
    data_dir = gw.config.storage.data_dir
    store = FileBlobStore.in_data_dir(data_dir)
    result = await asyncio.to_thread(prune, gw.sessions, data_dir, store, DAYS)
    assert (result.messages, result.spool_files, result.raw_blobs) == (1, 1, 1)
    t = token(gw, "auditor")
    async with api(gw) as client:
        shown = (await client.get(f"/messages/{first.queue_id}", headers=bearer(t))).json()
        raw = await client.get(f"/messages/{first.queue_id}/raw", headers=bearer(t))
        other = await client.get(f"/messages/{gw.test_data['messages'][1].queue_id}/raw",
                                 headers=bearer(t))  # fmt: skip
        verify = (await client.get("/registers/default/verify", headers=bearer(t))).json()
        document = await client.get(
            f"/documents/{gw.test_data['entries'][0].id}/content", headers=bearer(t)
        )
    assert shown["raw_purged_at"] is not None and shown["state"] == RELAYED
    purged_on = dt.datetime.fromisoformat(shown["raw_purged_at"]).strftime("%Y-%m-%d")
    assert raw.status_code == 410
    assert raw.json()["detail"] == (
        f"the raw message {first.queue_id} was purged on {purged_on} after {DAYS + 3} days of "
        "retention"
    )
    assert other.status_code == 200  # still held: untouched
    assert verify["ok"] is True and verify["purged_raw_blobs"] == 1
    assert document.status_code == 200  # documents are kept for good
    raws = [(r.resource, r.status) for r in audit_rows(gw, "message.raw")]
    assert raws == [(f"message:{first.queue_id}", 410),
                    (f"message:{gw.test_data['messages'][1].queue_id}", 200)]  # fmt: skip


async def test_serve_prunes_periodically(config: Config, make_gateway) -> None:
    config.storage.retention_days = DAYS
    config.storage.prune_interval_minutes = 0.002  # 0.12 s (the first run comes as soon)
    gw = await make_gateway(config)
    assert [t.get_coro().__name__ for t in gw.tasks].count("prune_periodically") == 1
    data_dir = config.storage.data_dir
    old = utcnow() - dt.timedelta(days=DAYS + 1)
    due = spool_message(gw.sessions, data_dir, b"Subject: old\r\n\r\nx\r\n", RELAYED, old)
    young = spool_message(gw.sessions, data_dir, b"Subject: new\r\n\r\nx\r\n", RELAYED, utcnow())
    for _ in range(100):
        if due.id in purged_ids(gw.sessions):
            break
        await asyncio.sleep(0.05)
    assert purged_ids(gw.sessions) == {due.id}
    assert not due.path.exists() and young.path.exists()
    later = spool_message(gw.sessions, data_dir, b"Subject: later\r\n\r\nx\r\n", BOUNCED, old)
    for _ in range(100):  # the next run, an interval later
        if later.id in purged_ids(gw.sessions):
            break
        await asyncio.sleep(0.05)
    assert not later.path.exists()
    await gw.shutdown()
    assert all(task.done() for task in gw.tasks)
