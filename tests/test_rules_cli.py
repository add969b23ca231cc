"""`mailgw rules check`, `mailgw rules test`, `mailgw classify` through add_commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from mailgw.rules.commands import add_commands

EML = (
    "From: =?utf-8?b?VsSDbiB0aMawIFPhu58gVMOgaSBjaMOtbmg=?= <vanthu@stc.quangngai.gov.vn>\r\n"
    "To: vanthu@stttt.quangngai.gov.vn\r\n"
    "Subject: =?utf-8?b?R2nhuqV5IG3hu51pIGjhu41wIGdpYW8gYmFu?=\r\n"
    "Date: Mon, 09 Mar 2026 08:00:00 +0700\r\n"
    "Message-ID: <t1@stc.quangngai.gov.vn>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Kính gửi: Các phòng.\r\n"
    "ỦY BAN NHÂN DÂN TỈNH QUẢNG NGÃI\r\n"
    "Số: 45/GM-UBND\r\n"
    "Quảng Ngãi, ngày 09 tháng 3 năm 2026\r\n"
    "GIẤY MỜI\r\n"
    "Họp giao ban công tác tháng 3 năm 2026.\r\n"
)


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mailgw")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def eml(tmp_path: Path) -> Path:
    d = tmp_path / "mail"
    d.mkdir()
    (d / "b.eml").write_bytes(EML.encode())
    (d / "a.eml").write_bytes(EML.replace("Giấy mời", "x").encode())
    (d / "notes.txt").write_text("not mail")
    return d


def test_rules_check_ok_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text('include = ["default"]\n', encoding="utf-8")
    assert run(["rules", "check", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[rule]]\nname = "x"\nwhen = { field = "sender", equals = "a" }\nthen.tags = ["t"]\n'
    )
    assert run(["rules", "check", str(bad)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith(f"{bad}:3:18: unknown field 'sender'")


def test_rules_test_prints_decision_and_conditions(
    eml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["rules", "test", str(eml / "b.eml")]) == 0
    out = capsys.readouterr().out
    assert "category: meeting_invitation (rule type-gm)" in out
    assert "symbol=45/GM-UBND" in out
    assert "rule type-gm: MATCHED" in out
    assert '✓ doc.type equals "GM"' in out
    assert "rule type-report: no match" in out
    assert '✗ doc.type in ["BC", "BB"]' in out


def test_rules_test_with_custom_rules(
    eml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "r.toml"
    rules.write_text('[[rule]]\nname = "all-report"\nthen.category = "report"\n')
    assert run(["rules", "test", "--json", "--rules", str(rules), str(eml / "b.eml")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["category"] == "report" and data["matched_rules"] == ["all-report"]
    rules.write_text("[[rule]]\n")
    assert run(["rules", "test", "--rules", str(rules), str(eml / "b.eml")]) == 2
    assert "no name" in capsys.readouterr().err


def test_classify_json_folder(eml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["classify", "--json", str(eml)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in lines] == ["a.eml", "b.eml"]  # sorted, .eml only
    b = lines[1]
    assert b["category"] == "meeting_invitation"
    assert b["doc_symbol"] == "45/GM-UBND" and b["doc_type"] == "GM"
    assert b["doc_date"] == "2026-03-09" and b["urgency"] == "thuong"
    assert b["confidentiality"] is None and b["attachments"] == 0
    assert "type-gm" in b["matched_rules"]


def test_classify_text_output_and_missing_file(
    eml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["classify", str(eml / "b.eml"), str(eml / "nope.eml")]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("b.eml\tmeeting_invitation\t45/GM-UBND\t")
    assert "nope.eml" in captured.err
