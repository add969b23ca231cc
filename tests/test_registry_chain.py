"""Tamper evidence: rows edited, deleted and inserted with SQL are found by verify; corrections
are new linked entries; the register prints as CSV and HTML; the CLI commands."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from mailgw.cli import main
from mailgw.registry.audit import verify_archive, verify_registers
from mailgw.registry.blobs import FileBlobStore
from mailgw.registry.chain import compute_hash
from mailgw.registry.export import CSV_FIELDS, register_lines, to_csv, to_html
from mailgw.registry.models import RegisterEntry
from mailgw.registry.register import CorrectionError, correct_entry, register_documents
from tests.test_registry_support import ARRIVAL, FIELDS, add_messages, doc, sessions

__all__ = ["sessions"]


@pytest.fixture
def store(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore.in_data_dir(tmp_path / "data")


def fill(sessions: sessionmaker[Session], store: FileBlobStore, count: int = 5) -> None:
    for i, message_row_id in enumerate(add_messages(sessions, count)):
        content = f"%PDF văn bản {i}".encode()
        store.put(content)
        raw_sha = store.put(b"raw message %d" % i)
        fields = dataclasses.replace(FIELDS, summary=f"Trích yếu {i + 1}")
        with sessions() as session, session.begin():
            register_documents(
                session, "default", arrival=ARRIVAL + dt.timedelta(minutes=i),
                message_row_id=message_row_id, message_id=f"<m{i}@t>", raw_sha256=raw_sha,
                documents=[doc(content, name=f"vb{i + 1}.pdf")], fields=fields,
            )  # fmt: skip


def first_problem(sessions, store=None) -> str:
    with sessions() as session:
        [report] = verify_registers(session, store)
    assert not report.ok
    return str(report.first)


def sql(sessions, statement: str, **params) -> None:
    with sessions() as session, session.begin():
        session.execute(text(statement), params)


def test_an_untouched_register_verifies(sessions, store) -> None:
    fill(sessions, store)
    with sessions() as session:
        [report] = verify_registers(session, store)
    assert report.ok and report.entries == 5


def test_an_edited_field_names_the_entry(sessions, store) -> None:
    fill(sessions, store)
    sql(sessions, "UPDATE register_entries SET summary = 'sửa lén' WHERE number = 3")
    problem = first_problem(sessions, store)
    assert problem.startswith("changed: default 2026/3 ")


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(sessions, store) -> None:
    fill(sessions, store)
    with sessions() as session, session.begin():
        entry = session.scalar(select(RegisterEntry).where(RegisterEntry.number == 3))
        entry.doc_symbol = "99/GM-UBND"
        entry.entry_hash = compute_hash(entry, entry.prev_hash)
    problem = first_problem(sessions, store)
    assert problem.startswith("inserted: default 2026/4 ")
    assert "does not link to default 2026/3" in problem


def test_a_deleted_entry_is_named(sessions, store) -> None:
    fill(sessions, store)
    sql(sessions, "DELETE FROM register_entries WHERE number = 3")
    problem = first_problem(sessions, store)
    assert problem.startswith("removed: chain position(s) 3..3 missing after default 2026/2")


def test_deleting_the_newest_entry_is_seen(sessions, store) -> None:
    fill(sessions, store)
    sql(sessions, "DELETE FROM register_entries WHERE number = 5")
    assert first_problem(sessions, store).startswith(
        "removed: chain position(s) 5..5 missing after default 2026/4"
    )


def test_an_inserted_row_is_named(sessions, store) -> None:
    fill(sessions, store)
    columns = [c.name for c in RegisterEntry.__table__.columns if c.name != "id"]
    copied = ", ".join(
        {"seq": "6", "number": "6", "part_index": "7", "summary": "'chèn thêm'"}.get(c, c)
        for c in columns
    )
    sql(sessions, f"INSERT INTO register_entries ({', '.join(columns)}) "
                  f"SELECT {copied} FROM register_entries WHERE number = 2")  # fmt: skip
    with sessions() as session:
        [report] = verify_registers(session, store)
    kinds = [p.kind for p in report.problems]
    assert str(report.first).startswith("inserted: default 2026/6 ")
    assert "changed" in kinds  # its copied hash does not cover its fields either


def test_a_renumbered_entry_is_seen(sessions, store) -> None:
    fill(sessions, store)
    sql(sessions, "UPDATE register_entries SET number = 7 WHERE number = 5")
    with sessions() as session:
        [report] = verify_registers(session, store)
    assert str(report.first).startswith("changed: default 2026/7 ")
    assert any(p.kind == "numbering" for p in report.problems)


def test_altered_and_missing_blobs(sessions, store) -> None:
    fill(sessions, store)
    with sessions() as session:
        entries = session.scalars(select(RegisterEntry).order_by(RegisterEntry.seq)).all()
    altered = store.path(entries[1].sha256)
    altered.chmod(0o640)
    altered.write_bytes(b"%PDF doctored")
    store.path(entries[3].sha256).unlink()
    problem = first_problem(sessions, store)
    assert problem.startswith("blob: default 2026/2 ") and "altered" in problem
    with sessions() as session:
        archive = verify_archive(session, store)
    assert archive.checked == 10
    assert sorted((p.state, p.sha256) for p in archive.problems) == sorted(
        [("altered", entries[1].sha256), ("missing", entries[3].sha256)]
    )


def test_a_correction_is_a_new_linked_entry(sessions, store) -> None:
    fill(sessions, store, 3)
    with sessions() as session, session.begin():
        fixed = correct_entry(session, "default", 2026, 2, {"summary": "Trích yếu đúng"},
                              "sai trích yếu")  # fmt: skip
    with sessions() as session:
        original = session.scalar(
            select(RegisterEntry).where(RegisterEntry.number == 2, RegisterEntry.revision == 0)
        )
        assert original.summary == "Trích yếu 2"  # never edited in place
        assert fixed.corrects_id == original.id and fixed.revision == 1 and fixed.seq == 4
        assert fixed.sha256 == original.sha256
        assert "Đính chính lần 1: sai trích yếu" in fixed.notes
        [report] = verify_registers(session, store)
        assert report.ok, report.problems
        lines = register_lines(session, "default", 2026)
    assert [line.entry.summary for line in lines] == [
        "Trích yếu 1",
        "Trích yếu đúng",
        "Trích yếu 3",
    ]
    with sessions() as session, session.begin(), pytest.raises(CorrectionError):
        correct_entry(session, "default", 2026, 2, {"sha256": "0" * 64}, "đổi tệp")
    with sessions() as session, session.begin(), pytest.raises(CorrectionError):
        correct_entry(session, "default", 2026, 9, {"summary": "x"}, "không có")


def test_export_csv_and_html(sessions, store) -> None:
    fill(sessions, store, 3)
    with sessions() as session:
        lines = register_lines(session, "default", 2026)
        some = register_lines(session, "default", 2026, dt.date(2026, 3, 12), dt.date(2026, 3, 12))
        none = register_lines(session, "default", 2026, dt.date(2026, 3, 13))
    assert len(some) == 3 and none == []
    text = to_csv(lines)
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert text.startswith(
        "register,year,number,arrival,issuer,doc_symbol,doc_date,summary,unit,urgency,"
        "confidentiality,notes,filename,sha256,message_id,"
    )
    assert tuple(header) == CSV_FIELDS
    first = dict(zip(header, rows[1], strict=True))
    assert first["number"] == "1" and first["arrival"] == "2026-03-12T08:15:00+07:00"
    assert first["doc_symbol"] == "45/GM-UBND" and first["doc_date"] == "2026-03-10"
    html = to_html(lines, "default", 2026)
    for heading in ("Ngày đến", "Số đến", "Tác giả", "Số, ký hiệu", "Ngày tháng văn bản",
                    "Tên loại và trích yếu nội dung", "Đơn vị hoặc người nhận", "Ngày chuyển",
                    "Ký nhận", "Ghi chú"):  # fmt: skip
        assert f"<th>{heading}</th>" in html
    assert "size: A4 landscape" in html
    assert "Giấy mời: Trích yếu 1" in html and "12/03/2026" in html and "Khẩn" in html


def write_config(tmp_path: Path, database_url: str, retention_days: int = 0) -> str:
    path = tmp_path / "mailgw.toml"
    path.write_text(
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\ndatabase_url = "{database_url}"\n'
        f"retention_days = {retention_days}\n"
    )
    return str(path)


def test_cli_verify_export_correct_archive(
    sessions, store, tmp_path: Path, database_url: str, capsys
) -> None:
    fill(sessions, store, 3)
    cfg = write_config(tmp_path, database_url)
    assert main(["register", "verify", "-c", cfg]) == 0
    assert "default: 3 entries, chain and numbers OK" in capsys.readouterr().out
    assert main(["archive", "verify", "-c", cfg]) == 0
    out = tmp_path / "so.html"
    assert main(["register", "export", "-c", cfg, "--year", "2026", "--format", "html",
                 "-o", str(out)]) == 0  # fmt: skip
    assert "Sổ đăng ký văn bản đến" in out.read_text()
    assert main(["register", "export", "-c", cfg, "--year", "2026", "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("\r\n") == 4
    assert main(["register", "correct", "-c", cfg, "--year", "2026", "--number", "1",
                 "--doc-symbol", "46/GM-UBND", "--reason", "sai số"]) == 0  # fmt: skip
    assert "default 2026/1: revision 1 added" in capsys.readouterr().out
    assert main(["register", "verify", "-c", cfg, "--register", "default"]) == 0
    sql(sessions, "UPDATE register_entries SET issuer = 'khác' WHERE number = 2")
    assert main(["register", "verify", "-c", cfg]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "first problem: changed: default 2026/2 " in out
    store.path(store.put(b"raw message 0")).chmod(0o640)
    store.path(store.put(b"raw message 0")).write_bytes(b"changed")
    assert main(["archive", "verify", "-c", cfg]) == 1
    assert "altered:" in capsys.readouterr().out
