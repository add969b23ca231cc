"""The register's hash chain: pure functions, no database.

Each entry's hash is SHA-256 over the canonical JSON (sorted keys, no spaces, UTF-8) of its
register fields, its document's blob digest, the digest of its extracted text and the previous
entry's hash (one chain per register, ordered by ``seq``). The register's head row holds the last
position and hash, so removing the newest entries is seen too. ``verify_chain`` walks a register
and names every place where an entry was changed, inserted or removed. Someone who recomputes
every later hash and the head row is seen only against a head kept elsewhere (anchor.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailgw.registry.models import GENESIS_HASH

HASHED_FIELDS = (
    "register", "year", "number", "revision", "corrects_id", "seq", "arrival",
    "issuer", "doc_symbol", "doc_date", "doc_type", "doc_type_name", "summary", "unit",
    "urgency", "confidentiality", "notes",
    "message_row_id", "part_index", "message_id", "filename", "content_type", "size",
    "sha256", "raw_sha256", "signature",
)  # fmt: skip


class EntryLike(Protocol):
    id: Any
    seq: int
    prev_hash: str
    entry_hash: str
    register: str
    year: int
    number: int
    revision: int
    sha256: str
    raw_sha256: str
    text: str


def _canon(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in a register entry")
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def canonical_fields(entry: Any) -> dict[str, Any]:
    fields = {name: _canon(getattr(entry, name)) for name in HASHED_FIELDS}
    fields["text_sha256"] = hashlib.sha256((entry.text or "").encode("utf-8")).hexdigest()
    return fields


def canonical_json(fields: dict[str, Any], prev_hash: str) -> bytes:
    doc = {"prev_hash": prev_hash, "entry": fields}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(entry: Any, prev_hash: str) -> str:
    return hashlib.sha256(canonical_json(canonical_fields(entry), prev_hash)).hexdigest()


@dataclass(frozen=True)
class Problem:
    kind: str  # changed, inserted, removed, numbering, blob, anchor
    seq: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass
class ChainReport:
    register: str
    entries: int = 0
    problems: list[Problem] = field(default_factory=list)
    purged_raw: set[str] = field(default_factory=set)  # raw blobs removed by retention, recorded
    anchors: int = 0  # heads kept elsewhere that were checked against the chain

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None


def label(entry: EntryLike) -> str:
    rev = f" rev {entry.revision}" if entry.revision else ""
    return f"{entry.register} {entry.year}/{entry.number}{rev} (chain #{entry.seq}, id {entry.id})"


def verify_chain(
    register: str,
    entries: Iterable[EntryLike],
    head: tuple[int, str] | None,
    counters: dict[int, int] | None = None,
    blob_ok: Callable[[str], str | None] | None = None,
    purged: Callable[[str], bool] | None = None,
) -> ChainReport:
    """Check one register. ``entries`` ordered by seq; ``head`` is (last_seq, last_hash) of the
    chain row; ``counters`` maps year to the counter's last number; ``blob_ok(sha)`` returns
    None when the blob is intact, else what is wrong with it; ``purged(sha)`` says whether a
    raw-message blob was removed on purpose (retention): then its absence is no problem. A
    document's blob must always be there."""
    report = ChainReport(register)
    add = report.problems.append
    prev_hash, expected_seq = GENESIS_HASH, 1
    last_number: dict[int, int] = {}
    previous: EntryLike | None = None
    for e in entries:
        report.entries += 1
        where = label(e)
        if e.seq < expected_seq:
            add(Problem("inserted", e.seq, f"{where} repeats chain position {e.seq}"))
        elif e.seq > expected_seq:
            after = f"after {label(previous)}" if previous else "at the start of the register"
            add(
                Problem(
                    "removed",
                    expected_seq,
                    f"chain position(s) {expected_seq}..{e.seq - 1} missing {after}, "
                    f"before {where}",
                )
            )
        elif e.prev_hash != prev_hash:
            before = label(previous) if previous else "the start of the register"
            add(
                Problem(
                    "inserted",
                    e.seq,
                    f"{where} does not link to {before}: an entry was changed, inserted "
                    "or removed there",
                )
            )
        if compute_hash(e, e.prev_hash) != e.entry_hash:
            add(Problem("changed", e.seq, f"{where} was changed: its fields do not match its hash"))
        if e.revision == 0:
            want = last_number.get(e.year, 0) + 1
            if e.number != want:
                add(Problem("numbering", e.seq, f"{where}: expected number {e.year}/{want}"))
            last_number[e.year] = max(e.number, last_number.get(e.year, 0))
        elif e.number > last_number.get(e.year, 0):
            add(Problem("numbering", e.seq, f"{where} corrects a number not yet given"))
        if blob_ok is not None:
            for digest in dict.fromkeys((e.sha256, e.raw_sha256)):
                trouble = blob_ok(digest)
                if trouble == "missing" and digest != e.sha256 and purged and purged(digest):
                    report.purged_raw.add(digest)
                elif trouble:
                    add(Problem("blob", e.seq, f"{where}: blob {digest} {trouble}"))
        prev_hash, expected_seq, previous = e.entry_hash, max(expected_seq, e.seq + 1), e
    if head is not None:
        head_seq, head_hash = head
        last = label(previous) if previous else "the start of the register"
        if head_seq > expected_seq - 1:
            add(
                Problem(
                    "removed",
                    expected_seq,
                    f"chain position(s) {expected_seq}..{head_seq} missing after {last}",
                )
            )
        elif head_seq < expected_seq - 1:
            add(
                Problem(
                    "inserted",
                    head_seq + 1,
                    f"entries after chain position {head_seq} were added outside the "
                    f"register (last: {last})",
                )
            )
        elif head_hash != prev_hash:
            add(Problem("changed", head_seq, f"{last} does not match the register's head hash"))
    elif report.entries:
        add(Problem("changed", None, "the register's head row is missing"))
    for year, counter in sorted((counters or {}).items()):
        have = last_number.get(year, 0)
        if counter > have:
            add(
                Problem(
                    "removed",
                    None,
                    f"{register} {year}/{have + 1}..{counter} were given but are missing",
                )
            )
        elif counter < have:
            add(
                Problem(
                    "inserted", None, f"{register} {year}: numbers after {counter} were never given"
                )
            )
    return report
