"""Rules engine: loader errors, operators, combinators, evaluation order, actions, trace."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from mailgw.mime.model import Address, Attachment, CalendarEvent, DocumentFacts, ParsedMessage
from mailgw.rules import MessageContext, RulesError, default_rules, evaluate, load_rules


def message(
    subject: str = "",
    body: str = "",
    attachments: list[Attachment] | None = None,
    facts: DocumentFacts | None = None,
    headers: list[tuple[str, str]] | None = None,
    calendar: CalendarEvent | None = None,
    sender: str = "vanthu@stttt.quangngai.gov.vn",
) -> ParsedMessage:
    return ParsedMessage(
        message_id="<1@x>",
        subject=subject,
        from_=[Address("Văn thư", sender)],
        to=[Address("", "hungnv@stttt.quangngai.gov.vn")],
        cc=[],
        reply_to=[],
        date=None,
        headers=headers or [("Subject", subject)],
        body_text=body,
        attachments=attachments or [],
        calendar=calendar,
        facts=facts or DocumentFacts(),
        size=1234,
    )


def ctx(msg: ParsedMessage | None = None, **kw: object) -> MessageContext:
    return MessageContext(parsed=msg or message(), **kw)  # type: ignore[arg-type]


def att(name: str, ctype: str = "application/pdf", size: int = 1000, text: str = "") -> Attachment:
    return Attachment(filename=name, content_type=ctype, size=size, sha256="0" * 64, text=text)


def one(cond: str, then: str = 'tags = ["hit"]') -> str:
    return f'[[rule]]\nname = "r"\nwhen = {cond}\nthen = {{ {then} }}\n'


def holds(cond: str, c: MessageContext) -> bool:
    return evaluate(load_rules(one(cond)), c).matched_rules == ["r"]


def problems(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(RulesError) as e:
        load_rules(text, "t.toml")
    return [(p.line, p.col, p.message) for p in e.value.problems]


# -- loader errors -------------------------------------------------------------------------------


def test_syntax_error_has_tomllib_position() -> None:
    [(line, col, msg)] = problems(
        '[[rule]]\nname = "a"\nwhen = { field = "subject" contains = "x" }\n'
    )
    assert (line, col) == (3, 28)
    assert msg.startswith("TOML syntax error")


def test_a_byte_order_mark_is_allowed_and_positions_stay_right() -> None:
    """Notepad saves UTF-8 with a BOM: the file loads, and problems keep their place."""
    text = '[[rule]]\nname = "a"\nthen.tags = ["t"]\n'
    assert [r.name for r in load_rules("\ufeff" + text).rules] == ["a"]
    [(line, col, msg)] = problems('\ufeff[[rule]]\nname = "a"\nthen.category = "reprot"\n')
    assert (line, col) == (3, 17) and "unknown category" in msg


def test_unknown_field_operator_category_located() -> None:
    text = (
        "# comment\n"  # 1
        "[[rule]]\n"  # 2
        'name = "a"\n'  # 3
        "when.all = [\n"  # 4
        '  { field = "subjct", contains = "x" },\n'  # 5
        '  { field = "body", contians = "y" },\n'  # 6
        "]\n"  # 7
        'then.category = "reprot"\n'  # 8
    )
    got = problems(text)
    assert got[0][:2] == (5, 13) and "unknown field 'subjct'" in got[0][2]
    assert "did you mean 'subject'" in got[0][2]
    assert got[1][:2] == (6, 21) and "unknown operator 'contians'" in got[1][2]
    assert "did you mean 'contains'" in got[1][2]
    assert got[2][:2] == (8, 17) and "unknown category 'reprot'" in got[2][2]
    assert len(got) == 3


def test_bad_regex_points_into_the_pattern() -> None:
    text = (
        '[[rule]]\nname = "a"\nwhen = { field = "body", matches = "ab(?<=c)" }\nthen.tags = ["t"]\n'
    )
    [(line, col, msg)] = problems(text)
    assert line == 3
    # value starts at column 36 (the quote); "(?<=" is at offset 2 of the pattern
    assert col == 36 + 1 + 2
    assert "bad regular expression" in msg and "re2" in msg


def test_missing_name_duplicate_unknown_key_wrong_type() -> None:
    text = (
        "[[rule]]\n"  # 1
        'when = { field = "subject", contains = "x" }\n'  # 2
        'then.tags = ["t"]\n'  # 3
        "[[rule]]\n"  # 4
        'name = "a"\n'  # 5
        'then.tags = ["t"]\n'  # 6
        "[[rule]]\n"  # 7
        'name = "a"\n'  # 8
        "priority = 3\n"  # 9
        'when = { field = "size", gt = "big" }\n'  # 10
        'then.tags = ["t"]\n'  # 11
    )
    got = problems(text)
    assert got[0][:2] == (1, 1) and "no name" in got[0][2]
    assert got[1][:2] == (8, 8) and "duplicate rule name 'a'" in got[1][2]
    assert "line 4" in got[1][2]
    assert got[2][:2] == (9, 1) and "unknown key 'priority'" in got[2][2]
    assert got[3][0] == 10 and "expects a number" in got[3][2]


def test_condition_shape_errors() -> None:
    assert (
        "exactly one operator"
        in problems(one('{ field = "subject", contains = "a", starts_with = "b" }'))[0][2]
    )
    assert "no 'field'" in problems(one('{ contains = "a" }'))[0][2]
    assert "does not apply" in problems(one('{ field = "size", contains = "a" }'))[0][2]
    assert "non-empty list" in problems(one("{ any = [] }"))[0][2]
    assert "CIDR" in problems(one('{ field = "client.addr", in_network = "10.0.0.300/8" }'))[0][2]
    assert "does nothing" in problems('[[rule]]\nname = "x"\nthen = {}\n')[0][2]
    assert (
        "header value"
        in problems(one('{ field = "size", gt = 1 }', 'set_header = { X-A = "a\\nb" }'))[0][2]
    )


# -- operators -------------------------------------------------------------------------------------


def test_text_operators_fold_by_default() -> None:
    c = ctx(message(subject="GIẤY MỜI họp  giao ban tháng 3", body="Kính gửi: Sở Tài chính"))
    assert holds('{ field = "subject", contains = "giay moi hop" }', c)
    assert holds('{ field = "subject", contains = ["xyz", "Giấy Mời"] }', c)
    assert holds('{ field = "subject", starts_with = "giấy mời" }', c)
    assert holds('{ field = "subject", ends_with = "THANG 3" }', c)
    assert holds('{ field = "subject", equals = "giay moi hop giao ban thang 3" }', c)
    assert holds('{ field = "subject", in = ["a", "giay moi hop giao ban thang 3"] }', c)
    assert holds('{ field = "body", matches = "kinh gui:\\\\s+so" }', c)
    assert holds('{ field = "body", matches = "Kính gửi" }', c)
    assert not holds('{ field = "subject", contains = "báo cáo" }', c)
    assert holds('{ field = "subject", exists = true }', c)
    assert holds('{ field = "doc.symbol", exists = false }', c)


def test_exact_comparisons() -> None:
    c = ctx(message(subject="Giấy mời họp"))
    assert not holds('{ field = "subject", contains = "giay moi", exact = true }', c)
    assert not holds('{ field = "subject", contains = "giấy mời", exact = true }', c)
    assert holds('{ field = "subject", contains = "Giấy mời", exact = true }', c)
    assert holds('{ field = "subject", matches = "^Giấy", exact = true }', c)
    assert not holds('{ field = "subject", matches = "^giấy", exact = true }', c)


def test_d_stroke_folds() -> None:
    c = ctx(message(subject="Đề án chuyển đổi số"))
    assert holds('{ field = "subject", contains = "de an" }', c)


def test_attachments_glob_count_size_and_any_attachment() -> None:
    files = [
        att("Giấy mời 45-GM.PDF", size=50_000, text="GIẤY MỜI"),
        att("ảnh.jpg", "image/jpeg", 9),
    ]
    c = ctx(message(attachments=files))
    assert holds('{ field = "attachment.name", glob = "*.pdf" }', c)
    assert holds('{ field = "attachment.name", glob = "giay moi*" }', c)
    assert not holds('{ field = "attachment.name", glob = "*.pdf", exact = true }', c)
    assert holds('{ field = "attachment.name", glob = "*.PDF", exact = true }', c)
    assert holds('{ field = "attachment.name", glob = "[aá]nh.jp?" }', c)
    assert holds('{ field = "attachment.count", equals = 2 }', c)
    assert holds('{ field = "attachment.count", ge = 2 }', c)
    assert not holds('{ field = "attachment.count", gt = 2 }', c)
    assert holds('{ field = "attachment.size", lt = 10 }', c)
    assert holds('{ field = "attachment.size", le = 9 }', c)
    assert holds('{ field = "attachment.content_type", starts_with = "image/" }', c)
    assert holds('{ field = "attachment.text", contains = "giay moi" }', c)
    assert holds('{ field = "attachment.extension", in = ["pdf", "docx"] }', c)
    # both conditions on the same attachment
    assert holds(
        '{ any_attachment = [ { field = "name", glob = "*.pdf" }, '
        '{ field = "size", gt = 1000 } ] }',
        c,
    )
    assert not holds(
        '{ any_attachment = [ { field = "name", glob = "*.jpg" }, '
        '{ field = "size", gt = 1000 } ] }',
        c,
    )


def test_facts_calendar_header_envelope_client_signature() -> None:
    facts = DocumentFacts(
        symbol="45/GM-UBND", doc_type="GM", doc_date=dt.date(2026, 3, 9), urgency="hoa_toc",
        is_reply=True, confidentiality="mat",
    )  # fmt: skip
    cal = CalendarEvent(method="REQUEST", summary="Họp giao ban", location="Phòng họp số 1")
    msg = message(
        facts=facts,
        calendar=cal,
        headers=[("X-Priority", "1"), ("Received", "a"), ("Received", "b")],
    )
    c = ctx(
        msg,
        mail_from="vanthu@vpubnd.quangngai.gov.vn",
        rcpt_to=["a@stc.quangngai.gov.vn", "b@snv.quangngai.gov.vn"],
        client_addr="10.20.1.15",
        auth_user="vanthu",
        listener="submission",
        trusted=True,
        signature={"valid": True, "fingerprint": "ABCD", "uid": "Văn thư <v@x>", "trust": "full"},
    )
    assert holds('{ field = "doc.symbol", equals = "45/gm-ubnd" }', c)
    assert holds('{ field = "doc.type", in = ["GM", "BC"] }', c)
    assert holds('{ field = "doc.date", ge = 2026-03-01 }', c)
    assert holds('{ field = "doc.date", lt = "2026-03-10" }', c)
    assert not holds('{ field = "doc.date", gt = 2026-03-09 }', c)
    assert holds('{ field = "doc.urgency", equals = "hoa_toc" }', c)
    assert holds('{ field = "doc.confidentiality", in = ["mat", "toi_mat"] }', c)
    assert holds('{ field = "doc.is_reply", equals = true }', c)
    assert holds('{ field = "doc.is_forward", equals = false }', c)
    assert holds('{ field = "calendar.method", equals = "request" }', c)
    assert holds('{ field = "calendar.location", contains = "phong hop" }', c)
    assert holds('{ field = "header.x-priority", equals = "1" }', c)
    assert holds('{ field = "header.Received", equals = "b" }', c)
    assert holds('{ field = "envelope.from", ends_with = "@vpubnd.quangngai.gov.vn" }', c)
    assert holds('{ field = "envelope.rcpt", ends_with = "@snv.quangngai.gov.vn" }', c)
    assert holds('{ field = "client.addr", in_network = ["192.168.0.0/16", "10.20.0.0/16"] }', c)
    assert not holds('{ field = "client.addr", in_network = "10.21.0.0/16" }', c)
    assert holds('{ field = "client.auth_user", equals = "vanthu" }', c)
    assert holds('{ field = "client.listener", equals = "submission" }', c)
    assert holds('{ field = "client.trusted", equals = true }', c)
    assert holds('{ field = "signature.valid", equals = true }', c)
    assert holds('{ field = "signature.trust", in = ["full", "ultimate"] }', c)
    assert holds('{ field = "signature.uid", contains = "van thu" }', c)
    assert not holds('{ field = "signature.reason", exists = true }', c)
    unsigned = ctx(message())
    assert holds('{ field = "signature.present", equals = false }', unsigned)
    assert not holds('{ field = "client.addr", in_network = "0.0.0.0/0" }', unsigned)


def test_all_any_not() -> None:
    c = ctx(message(subject="Báo cáo tháng", body="để biết"))
    a = '{ field = "subject", contains = "bao cao" }'
    b = '{ field = "body", contains = "xin y kien" }'
    assert holds(f"{{ any = [ {a}, {b} ] }}", c)
    assert not holds(f"{{ all = [ {a}, {b} ] }}", c)
    assert holds(f"{{ all = [ {a}, {{ not = {b} }} ] }}", c)
    assert not holds(f"{{ not = {{ any = [ {a}, {b} ] }} }}", c)
    assert holds(f"[ {a}, {{ not = {b} }} ]", c)  # a list is an implicit all


def test_pathological_regex_is_linear() -> None:
    c = ctx(message(body="a" * 50_000 + "!"))
    start = time.perf_counter()
    assert not holds('{ field = "body", matches = "^(a+)+$", exact = true }', c)
    assert not holds('{ field = "body", matches = "(a|aa)*b" }', c)
    assert time.perf_counter() - start < 1.0
    assert "back-references" in problems(one('{ field = "body", matches = "(a)\\\\1" }'))[0][2]


# -- evaluation order and actions ----------------------------------------------------------------


RULES = """
[[rule]]
name = "first"
when = { field = "subject", contains = "bao cao" }
then = { category = "report", tags = ["a"] }

[[rule]]
name = "second"
when = { field = "subject", contains = "thang" }
then = { category = "announcement", tags = ["b", "a"] }

[[rule]]
name = "boss"
when = { field = "from", ends_with = "@boss.gov.vn" }
then = { category = "working_document", override = true }

[[rule]]
name = "quarantine"
when = { field = "attachment.extension", in = ["exe", "js"] }
then.hold = "executable attachment"
then.notify = { template = "held", to = ["it@stttt.gov.vn"] }
then.stop = true

[[rule]]
name = "spam"
when = { field = "subject", contains = "khuyen mai" }
then.bounce = "not accepted"
then.add_recipients = ["log@stttt.gov.vn"]
then.set_header = { X-Mailgw-Spam = "yes" }
then.add_header = { X-Note = "x" }

[[rule]]
name = "after-stop"
then = { tags = ["late"], register = "default" }
"""


def test_first_category_wins_and_tags_accumulate() -> None:
    d = evaluate(load_rules(RULES), ctx(message(subject="Báo cáo tháng 3")))
    assert d.category == "report" and d.category_rule == "first"
    assert d.matched_rules == ["first", "second", "after-stop"]
    assert d.tags == ["a", "b", "late"]
    assert d.registers == ["default"]


def test_override() -> None:
    d = evaluate(load_rules(RULES), ctx(message(subject="Báo cáo", sender="gd@boss.gov.vn")))
    assert d.category == "working_document" and d.category_rule == "boss"


def test_default_category_other() -> None:
    d = evaluate(load_rules(RULES), ctx(message(subject="chiều nay")))
    assert d.category == "other" and d.category_rule is None


def test_stop_hold_notify() -> None:
    d = evaluate(load_rules(RULES), ctx(message(subject="x", attachments=[att("setup.EXE")])))
    assert d.stopped_by == "quarantine"
    assert "after-stop" not in d.matched_rules
    assert (
        d.hold is not None
        and d.hold.reason == "executable attachment"
        and d.hold.rule == "quarantine"
    )
    [n] = d.notifications
    assert (n.template, n.recipients) == ("held", ("it@stttt.gov.vn",))
    assert [t.rule for t in d.trace][-1] == "quarantine"


def test_bounce_headers_recipients_in_decision() -> None:
    d = evaluate(load_rules(RULES), ctx(message(subject="Khuyến mãi lớn")))
    assert d.bounce is not None and d.bounce.reason == "not accepted"
    assert d.extra_recipients == ["log@stttt.gov.vn"]
    assert [(h.kind, h.name, h.value) for h in d.headers] == [
        ("set_header", "X-Mailgw-Spam", "yes"),
        ("add_header", "X-Note", "x"),
    ]
    data = d.to_dict()
    kinds = [a["action"] for a in data["actions"]]
    assert sorted(kinds) == ["add_header", "add_recipients", "bounce", "register", "set_header"]
    import json

    json.dumps(data)  # JSON-safe


def test_trace_and_explain() -> None:
    d = evaluate(load_rules(RULES), ctx(message(subject="Báo cáo quý")))
    by = {t.rule: t for t in d.trace}
    assert by["first"].matched and by["first"].conditions[0].held is True
    assert not by["second"].matched and by["second"].conditions[0].held is False
    assert by["boss"].conditions[0].condition == 'from ends_with "@boss.gov.vn"'
    text = d.explain()
    assert "category: report (rule first)" in text
    assert "rule second: no match" in text
    assert '✗ subject contains "thang"' in text
    assert '✓ subject contains "bao cao"' in text
    assert "=> category=report (decided); tags=a" in text


def test_trace_marks_short_circuited_conditions() -> None:
    rules = load_rules(
        one(
            '{ all = [ { field = "subject", contains = "zzz" }, '
            '{ field = "body", contains = "y" } ] }'
        )
    )
    [t] = evaluate(rules, ctx(message(subject="a", body="y"))).trace
    assert [c.held for c in t.conditions] == [None, False, None]  # "all of:", ✗, not evaluated


def test_prefiltered_and_full_evaluation_agree() -> None:
    rules = load_rules(RULES)
    for subj in ["Báo cáo", "tháng", "khuyến mãi", "x", "bao cao thang khuyen mai"]:
        d = evaluate(rules, ctx(message(subject=subj)))
        traced = [t.rule for t in d.trace if t.matched]
        assert traced == d.matched_rules


# -- includes ---------------------------------------------------------------------------------


def test_include_default_disable_replace_before(tmp_path) -> None:
    text = """
include = ["default"]
disable = ["flag-urgent"]

[[rule]]
name = "type-report"
replace = true
when = { field = "doc.type", in = ["BC", "BB"] }
then = { category = "report", tags = ["bc-local"] }

[[rule]]
name = "vip"
before = "automatic-mail"
when = { field = "from", equals = "chutich@quangngai.gov.vn" }
then = { category = "working_document", tags = ["vip"] }
"""
    rules = load_rules(text, str(tmp_path / "local.toml"))
    names = rules.names
    assert "flag-urgent" not in names
    assert names.index("vip") == names.index("automatic-mail") - 1
    assert names[names.index("type-report") - 1] == "materials-serving-meeting"
    assert rules.get("type-report").tags == ("bc-local",)
    d = evaluate(
        rules, ctx(message(facts=DocumentFacts(symbol="1/BC-X", doc_type="BC", urgency="khan")))
    )
    assert d.category == "report" and "bc-local" in d.tags and "urgent" not in d.tags


def test_include_errors(tmp_path) -> None:
    (tmp_path / "a.toml").write_text('include = ["b.toml"]\n', encoding="utf-8")
    (tmp_path / "b.toml").write_text('include = ["a.toml"]\n', encoding="utf-8")
    with pytest.raises(RulesError) as e:
        load_rules((tmp_path / "a.toml").read_text(), str(tmp_path / "a.toml"))
    assert any("include cycle" in p.message for p in e.value.problems)
    got = problems('include = ["default", "missing.toml"]\ndisable = ["no-such-rule"]\n')
    assert got[0][:2] == (1, 23) and "cannot include 'missing.toml'" in got[0][2]
    assert got[1][:2] == (2, 12) and "no-such-rule" in got[1][2]
    dup = problems('include = ["default"]\n[[rule]]\nname = "type-gm"\nthen.tags = ["x"]\n')
    assert dup[0][0] == 3 and "replace = true" in dup[0][2]


def test_included_file_problem_reports_that_file(tmp_path) -> None:
    (tmp_path / "common.toml").write_text('[[rule]]\nname = "c"\nthen.category = "nope"\n', "utf-8")
    with pytest.raises(RulesError) as e:
        load_rules('include = ["common.toml"]\n', str(tmp_path / "main.toml"))
    [p] = e.value.problems
    assert p.source.endswith("common.toml") and (p.line, p.col) == (3, 17)


# -- default rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "subject", "body", "expected"),
    [
        (
            DocumentFacts(symbol="45/GM-UBND", doc_type="GM"),
            "Gửi văn bản",
            "",
            "meeting_invitation",
        ),
        (
            DocumentFacts(symbol="7/BC-STC", doc_type="BC"),
            "Gửi tài liệu phục vụ cuộc họp",
            "",
            "meeting_materials",
        ),
        (
            DocumentFacts(symbol="7/BC-STC", doc_type="BC"),
            "Gửi báo cáo",
            "để UBND tỉnh biết",
            "report",
        ),
        (DocumentFacts(symbol="3/TB-VP", doc_type="TB"), "Thông báo", "", "announcement"),
        (DocumentFacts(symbol="523/UBND-VX"), "V/v báo cáo nhanh", "", "working_document"),
        (DocumentFacts(), "Xin ý kiến dự thảo Kế hoạch", "", "working_document"),
        (DocumentFacts(), "Lịch cắt điện thứ Bảy", "", "announcement"),
        (DocumentFacts(), "chiều nay đi ăn không", "Anh ơi, báo cáo tháng em gửi rồi nhé", "other"),
        (DocumentFacts(is_reply=True), "Re: Giấy mời họp giao ban", "", "meeting_invitation"),
        (DocumentFacts(), "Meeting invitation: budget review", "", "meeting_invitation"),
    ],
)
def test_default_rules_signals(
    facts: DocumentFacts, subject: str, body: str, expected: str
) -> None:
    d = evaluate(default_rules(), ctx(message(subject=subject, body=body, facts=facts)))
    assert d.category == expected, d.explain(all_rules=False)


def test_default_rules_calendar_register_confidential() -> None:
    cal = CalendarEvent(method="REQUEST", summary="Họp")
    d = evaluate(
        default_rules(), ctx(message(subject="Họp nhóm", calendar=cal, attachments=[att("a.pdf")]))
    )
    assert d.category == "meeting_invitation" and d.registers == ["default"]
    secret = DocumentFacts(symbol="1/BC-CA", doc_type="BC", confidentiality="mat")
    d = evaluate(default_rules(), ctx(message(subject="Báo cáo", facts=secret)))
    assert d.registers == ["confidential"] and d.hold is not None
    auto = message(subject="Your password", headers=[("Auto-Submitted", "auto-generated")])
    assert evaluate(default_rules(), ctx(auto)).category == "other"
