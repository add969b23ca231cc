"""Checking the register and the archive against the database: what `verify` commands run."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import select, union
from sqlalchemy.orm import Session

from mailgw.registry.anchor import Anchor, check_anchor
from mailgw.registry.blobs import BlobStatus, BlobStore
from mailgw.registry.chain import ChainReport, verify_chain
from mailgw.registry.models import PurgedBlob, RegisterChain, RegisterCounter, RegisterEntry


def register_names(session: Session) -> list[str]:
    query = union(select(RegisterChain.register), select(RegisterEntry.register).distinct())
    return sorted(session.scalars(query))


def _entries(session: Session, register: str) -> Iterator[RegisterEntry]:
    query = (
        select(RegisterEntry)
        .where(RegisterEntry.register == register)
        .order_by(RegisterEntry.seq, RegisterEntry.id)
        .execution_options(yield_per=500)
    )
    yield from session.scalars(query)


def is_purged(session: Session, digest: str) -> bool:
    """Whether retention removed this blob on purpose (``purged_blobs``)."""
    return session.scalar(select(PurgedBlob.id).where(PurgedBlob.sha256 == digest)) is not None


def verify_register(session: Session, register: str, store: BlobStore | None) -> ChainReport:
    head_row = session.get(RegisterChain, register)
    head = (head_row.last_seq, head_row.last_hash) if head_row else None
    counters = dict(
        session.execute(
            select(RegisterCounter.year, RegisterCounter.last_number).where(
                RegisterCounter.register == register
            )
        ).all()
    )

    @functools.cache
    def blob_ok(digest: str) -> str | None:
        status = store.verify(digest)
        return None if status.ok else status.state

    return verify_chain(
        register, _entries(session, register), head, counters, blob_ok if store else None,
        functools.cache(functools.partial(is_purged, session)),
    )  # fmt: skip


def entry_at(session: Session, register: str, seq: int) -> RegisterEntry | None:
    return session.scalar(
        select(RegisterEntry).where(RegisterEntry.register == register, RegisterEntry.seq == seq)
    )


def check_anchors(session: Session, report: ChainReport, anchors: Iterable[Anchor]) -> None:
    """Add to ``report`` every anchor of its register that no longer holds."""
    for anchor in anchors:
        if anchor.register != report.register:
            continue
        report.anchors += 1
        problem = check_anchor(anchor, entry_at(session, anchor.register, anchor.seq))
        if problem is not None:
            report.problems.append(problem)


def verify_registers(
    session: Session,
    store: BlobStore | None,
    names: Iterable[str] | None = None,
    anchors: Iterable[Anchor] = (),
) -> list[ChainReport]:
    """Every register (or ``names``), each also checked against its ``anchors``. Without
    ``names``, a register that has anchors but no rows any more is reported too."""
    anchors = list(anchors)
    if names is None:
        names = register_names(session)
        names += sorted({a.register for a in anchors} - set(names))
    reports = []
    for name in names:
        report = verify_register(session, name, store)
        check_anchors(session, report, anchors)
        reports.append(report)
    return reports


def register_heads(session: Session, names: Iterable[str] | None = None) -> list[RegisterChain]:
    query = select(RegisterChain).order_by(RegisterChain.register)
    if names is not None:
        query = query.where(RegisterChain.register.in_(list(names)))
    return list(session.scalars(query))


@dataclass
class ArchiveReport:
    checked: int  # blobs re-hashed or looked for
    problems: list[BlobStatus]
    purged: int  # raw-message blobs the register names that retention removed (recorded)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_archive(session: Session, store: BlobStore) -> ArchiveReport:
    """Re-hash every stored blob and look for every blob the register refers to. A missing
    raw-message blob recorded in ``purged_blobs`` was removed by retention: no problem."""
    documents = set(session.scalars(select(RegisterEntry.sha256).distinct()))
    raws = set(session.scalars(select(RegisterEntry.raw_sha256).distinct())) - documents
    problems: list[BlobStatus] = []
    seen: set[str] = set()
    for digest in store.iterate():
        seen.add(digest)
        try:
            status = store.verify(digest)
        except Exception as exc:  # a stray file with a name that is not a digest
            problems.append(BlobStatus(digest, "altered", str(exc)))
            continue
        if not status.ok:
            problems.append(status)
    purged = 0
    for digest in sorted((documents | raws) - seen):
        if digest in raws and is_purged(session, digest):
            purged += 1
        else:
            problems.append(BlobStatus(digest, "missing", "referenced by the register"))
    return ArchiveReport(len(seen | documents | raws), problems, purged)
