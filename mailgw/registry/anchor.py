"""Anchoring a register: its chain head, printed and kept outside the database, checked later.

Someone with write access to the database who changes an entry and recomputes every later hash
and the head row leaves a chain that verifies. A head kept elsewhere (printed in the register,
signed, mailed to the supervising agency) is out of that person's reach: ``mailgw register
head`` prints one line per register, ``<register> <chain position> <hash> <time>``, and
``mailgw register verify --anchor FILE`` checks that every such line still holds: the entry at
that chain position still has that hash. A rewritten history changes it.

An anchor file is the printed lines; blank lines, ``#`` comments and the frame of an OpenPGP
clear-signed text (whose signature ``gpg --verify`` checks) are skipped, anything else is an
error, so a damaged file never passes by checking nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from mailgw.registry.chain import EntryLike, Problem, label
from mailgw.registry.models import GENESIS_HASH

HEADER = (
    "# mailgw register head: register, chain position, hash, time. Keep it outside the "
    "gateway;\n# check it later with `mailgw register verify --anchor FILE`."
)
_LINE = re.compile(
    r"(?P<register>[A-Za-z0-9_.-]{1,64})\s+(?P<seq>\d{1,18})\s+(?P<hash>[0-9a-f]{64})"
    r"(?:\s+(?P<at>\S+))?"
)


class AnchorError(Exception):
    pass


@dataclass(frozen=True)
class Anchor:
    register: str
    seq: int
    hash: str
    at: str = ""  # when it was printed, as printed
    where: str = ""  # FILE:LINE it was read from

    def __str__(self) -> str:
        printed = f", printed {self.at}" if self.at else ""
        return f"{self.where} ({self.register} #{self.seq}{printed})"


def head_line(register: str, seq: int, hash_: str, at: dt.datetime) -> str:
    return f"{register} {seq} {hash_} {at.isoformat(timespec='seconds')}"


def parse_anchors(text: str, source: str) -> list[Anchor]:
    """The anchors of a file of ``register head`` lines. Raises AnchorError on any other line
    and on a file without anchors."""
    anchors: list[Anchor] = []
    in_signature = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("-----BEGIN PGP SIGNATURE"):
            in_signature = True
        if in_signature:
            in_signature = not stripped.startswith("-----END PGP SIGNATURE")
            continue
        if not stripped or stripped.startswith(("#", "-----BEGIN PGP SIGNED", "Hash:")):
            continue
        match = _LINE.fullmatch(stripped)
        if match is None:
            raise AnchorError(f"{source}:{number}: not a `mailgw register head` line: "
                              f"{stripped[:80]!r}")  # fmt: skip
        anchors.append(
            Anchor(match["register"], int(match["seq"]), match["hash"], match["at"] or "",
                   f"{source}:{number}")
        )  # fmt: skip
    if not anchors:
        raise AnchorError(f"{source}: no `mailgw register head` line in it")
    return anchors


def check_anchor(anchor: Anchor, entry: EntryLike | None) -> Problem | None:
    """None when ``entry`` (the one now at the anchor's chain position) matches the anchor."""
    if anchor.seq == 0:
        if anchor.hash == GENESIS_HASH:
            return None
        return Problem("anchor", 0, f"{anchor}: position 0 has the hash {GENESIS_HASH}")
    if entry is None:
        return Problem(
            "anchor",
            anchor.seq,
            f"{anchor}: the register has no entry at chain position {anchor.seq} any more: "
            "its history was cut or rewritten",
        )
    if entry.entry_hash != anchor.hash:
        return Problem(
            "anchor",
            anchor.seq,
            f"{anchor}: {label(entry)} now has hash {entry.entry_hash}, not {anchor.hash}: the "
            f"register's history up to chain position {anchor.seq} was rewritten",
        )
    return None
