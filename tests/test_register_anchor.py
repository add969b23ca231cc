"""Anchoring the register: `register head` prints the chain heads, `register verify --anchor`
names a history that was rewritten with every hash and the head row recomputed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from mailgw.cli import main
from mailgw.registry.blobs import FileBlobStore
from mailgw.registry.chain import compute_hash
from mailgw.registry.models import GENESIS_HASH, RegisterChain, RegisterEntry
from mailgw.registry.register import register_documents
from tests.test_registry_chain import store, write_config
from tests.test_registry_support import ARRIVAL, FIELDS, add_messages, doc, sessions

__all__ = ["sessions", "store"]

HEAD_LINE = re.compile(r"(\S+) (\d+) ([0-9a-f]{64}) (\S+)")


def add_entries(
    sessions: sessionmaker[Session], store: FileBlobStore, count: int, start: int = 0,
    register: str = "default",
) -> None:  # fmt: skip
    for i, message_row_id in enumerate(add_messages(sessions, count, start), start=start):
        content = f"%PDF văn bản {i}".encode()
        store.put(content)
        raw_sha = store.put(b"raw message %d" % i)
        with sessions() as session, session.begin():
            register_documents(
                session, register, arrival=ARRIVAL + dt.timedelta(minutes=i),
                message_row_id=message_row_id, message_id=f"<m{i}@t>", raw_sha256=raw_sha,
                documents=[doc(content, name=f"vb{i + 1}.pdf")],
                fields=dataclasses.replace(FIELDS, summary=f"Trích yếu {i + 1}"),
            )  # fmt: skip


def heads(sessions) -> dict[str, tuple[int, str]]:
    with sessions() as session:
        rows = session.scalars(select(RegisterChain)).all()
        return {r.register: (r.last_seq, r.last_hash) for r in rows}


def head(capsys, cfg: str, *args: str) -> str:
    assert main(["register", "head", "-c", cfg, *args]) == 0
    return capsys.readouterr().out


def verify(capsys, cfg: str, anchor: Path) -> tuple[int, str]:
    code = main(["register", "verify", "-c", cfg, "--anchor", str(anchor)])
    return code, capsys.readouterr().out


def rewrite_from(sessions, number: int) -> None:
    """Change entry ``number`` of `default` and recompute every later hash and the head row:
    what someone with write access to the database can do."""
    with sessions() as session, session.begin():
        entries = session.scalars(
            select(RegisterEntry).where(RegisterEntry.register == "default")
            .order_by(RegisterEntry.seq)
        ).all()  # fmt: skip
        prev = GENESIS_HASH
        for e in entries:
            if e.number == number:
                e.summary = "sửa lén"
            if e.number >= number:
                e.prev_hash = prev
                e.entry_hash = compute_hash(e, prev)
            prev = e.entry_hash
        session.get(RegisterChain, "default").last_hash = prev


def test_head_lines_anchor_an_untouched_register(
    sessions, store, tmp_path: Path, database_url: str, capsys
) -> None:
    add_entries(sessions, store, 3)
    add_entries(sessions, store, 1, start=10, register="confidential")
    cfg = write_config(tmp_path, database_url)
    out = head(capsys, cfg)
    lines = out.splitlines()
    assert lines[0].startswith("# mailgw register head: register, chain position, hash, time")
    printed = {m[1]: (int(m[2]), m[3]) for m in map(HEAD_LINE.fullmatch, lines[2:]) if m}
    assert printed == heads(sessions) and len(lines) == 4
    at = dt.datetime.fromisoformat(HEAD_LINE.fullmatch(lines[2])[4])
    assert at.utcoffset() == dt.timedelta(hours=7)  # the agency's time zone
    assert (
        head(capsys, cfg, "--register", "confidential")
        .splitlines()[2]
        .startswith("confidential 1 ")
    )

    anchor = tmp_path / "so-den-head.txt"
    anchor.write_text(out, encoding="utf-8")
    code, out = verify(capsys, cfg, anchor)
    assert code == 0, out
    assert "default: 3 entries, chain and numbers OK; 1 anchor(s) checked" in out
    assert "confidential: 1 entries, chain and numbers OK; 1 anchor(s) checked" in out
    add_entries(sessions, store, 2, start=3)  # the register grows: the anchor still holds
    assert verify(capsys, cfg, anchor)[0] == 0


def test_a_rewritten_history_is_named_by_its_anchor(
    sessions, store, tmp_path: Path, database_url: str, capsys
) -> None:
    cfg = write_config(tmp_path, database_url)
    add_entries(sessions, store, 2)
    early = head(capsys, cfg)
    add_entries(sessions, store, 3, start=2)
    anchor = tmp_path / "anchors.txt"
    anchor.write_text(early + head(capsys, cfg), encoding="utf-8")  # positions 2 and 5
    late_line = len(anchor.read_text().splitlines())
    _, anchored_hash = heads(sessions)["default"]

    rewrite_from(sessions, 3)
    assert main(["register", "verify", "-c", cfg]) == 0  # the database alone cannot tell
    assert "default: 5 entries, chain and numbers OK" in capsys.readouterr().out
    code, out = verify(capsys, cfg, anchor)
    assert code == 1
    assert "default: 5 entries, FAILED; 2 anchor(s) checked" in out
    first = out.splitlines()[1]
    assert first.startswith(f"  first problem: anchor: {anchor}:{late_line} (default #5, ")
    assert "default 2026/5 (chain #5, " in first and f"not {anchored_hash}:" in first
    assert "the register's history up to chain position 5 was rewritten" in first
    assert "also:" not in out  # the anchor at position 2 still holds

    with sessions() as session, session.begin():  # cut the rewritten tail off as well
        session.execute(text("DELETE FROM register_entries WHERE number > 3"))
        session.execute(text("UPDATE register_counters SET last_number = 3"))
        last = session.scalar(select(RegisterEntry.entry_hash).where(RegisterEntry.seq == 3))
        session.execute(
            text("UPDATE register_chains SET last_seq = 3, last_hash = :h"), {"h": last}
        )
    assert main(["register", "verify", "-c", cfg]) == 0
    capsys.readouterr()
    code, out = verify(capsys, cfg, anchor)
    assert code == 1
    assert "the register has no entry at chain position 5 any more" in out


def test_an_anchor_for_a_register_that_is_gone(
    sessions, store, tmp_path: Path, database_url: str, capsys
) -> None:
    cfg = write_config(tmp_path, database_url)
    add_entries(sessions, store, 1)
    anchor = tmp_path / "anchors.txt"
    anchor.write_text(f"vanban-di 4 {'ab' * 32} 2026-03-12T09:00:00+07:00\n")
    code, out = verify(capsys, cfg, anchor)
    assert code == 1
    assert "vanban-di: 0 entries, FAILED; 1 anchor(s) checked" in out
    assert f"anchor: {anchor}:1 (vanban-di #4, printed 2026-03-12T09:00:00+07:00)" in out


def test_a_clear_signed_anchor_file_is_read_and_a_bad_one_refused(
    sessions, store, tmp_path: Path, database_url: str, capsys
) -> None:
    cfg = write_config(tmp_path, database_url)
    add_entries(sessions, store, 2)
    lines = head(capsys, cfg)
    signed = tmp_path / "signed.txt"
    signed.write_text(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n" + lines
        + "-----BEGIN PGP SIGNATURE-----\n\niQEzBAEBCgAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n"
    )  # fmt: skip
    assert verify(capsys, cfg, signed)[0] == 0

    bad = tmp_path / "bad.txt"
    bad.write_text(lines + "default 2 not-a-hash\n")
    assert main(["register", "verify", "-c", cfg, "--anchor", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"mailgw: {bad}:4: not a `mailgw register head` line: 'default 2 not-a-hash'" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert main(["register", "verify", "-c", cfg, "--anchor", str(empty)]) == 2
    assert "no `mailgw register head` line in it" in capsys.readouterr().err
    assert main(["register", "verify", "-c", cfg, "--anchor", str(tmp_path / "nope")]) == 2
    capsys.readouterr()


def test_head_refuses_a_head_row_that_does_not_match(
    sessions, store, tmp_path: Path, database_url: str, capsys
) -> None:
    cfg = write_config(tmp_path, database_url)
    add_entries(sessions, store, 2)
    assert main(["register", "head", "-c", cfg, "--register", "nope"]) == 1
    assert capsys.readouterr().err == "mailgw: no register nope\n"
    with sessions() as session, session.begin():
        session.execute(text("UPDATE register_chains SET last_hash = :h"), {"h": "cd" * 32})
    assert main(["register", "head", "-c", cfg]) == 1
    out, err = capsys.readouterr()
    assert "default" not in out.replace("# ", "")
    assert err == (
        "mailgw: default: the head row does not match chain position 2: "
        "run `mailgw register verify`\n"
    )


@pytest.mark.parametrize("seq,hash_,ok", [(0, GENESIS_HASH, True), (0, "ab" * 32, False)])
def test_an_anchor_of_the_empty_register(seq: int, hash_: str, ok: bool) -> None:
    from mailgw.registry.anchor import Anchor, check_anchor

    assert (check_anchor(Anchor("default", seq, hash_), None) is None) == ok
