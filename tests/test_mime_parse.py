"""parse_message on hand-made edge cases: encodings, structure, limits, facts."""

from __future__ import annotations

import base64
import time
import unicodedata

from mailgw.mime.addresses import parse_address_list
from mailgw.mime.charset import decode_bytes
from mailgw.mime.headers import decode_header_value
from mailgw.mime.parse import ParseLimits, parse_message
from mailgw.mime.text import encode_tcvn3

TONES = "\u0300\u0301\u0303\u0309\u0323"


def cp1258(text: str) -> bytes:
    """Encode like Windows does: base letters precomposed, tone marks combining."""
    out = b""
    for ch in unicodedata.normalize("NFC", text):
        try:
            out += ch.encode("cp1258")
        except UnicodeEncodeError:
            d = unicodedata.normalize("NFD", ch)
            tones = "".join(c for c in d if c in TONES)
            base = unicodedata.normalize("NFC", "".join(c for c in d if c not in TONES))
            out += base.encode("cp1258") + tones.encode("cp1258")
    return out


def msg(headers: str, body: bytes = b"hello\r\n") -> bytes:
    return headers.replace("\n", "\r\n").encode("ascii") + b"\r\n" + body


# --- headers ---------------------------------------------------------------------------------
def test_encoded_words_all_kinds():
    assert decode_header_value("=?utf-8?Q?Gi=E1=BA=A5y_m?= =?utf-8?Q?=E1=BB=9Di?=") == "Giấy mời"
    assert decode_header_value("=?UTF-8?B?R2nhuqV5IG3hu51p?=") == "Giấy mời"
    # glued words, no space; lower-case b; text after
    assert decode_header_value("=?utf-8?b?R2nhuqV5?==?utf-8?Q?_m=E1=BB=9Di?=!") == "Giấy mời!"
    # one UTF-8 character split across two encoded words
    assert decode_header_value("=?utf-8?Q?Gi=E1=BA?= =?utf-8?Q?=A5y?=") == "Giấy"
    # mislabelled: declared latin-1, bytes are UTF-8
    assert decode_header_value("=?iso-8859-1?Q?Gi=E1=BA=A5y?=") == "Giấy"
    # windows-1258: decomposed marks -> NFC
    assert decode_header_value("=?windows-1258?Q?Ta=CCi_li=EA=F2u?=") == "Tài liệu"
    # unknown charset with TCVN3 bytes
    assert decode_header_value("=?x-unknown?Q?Qu=B6ng_Ng=B7i?=") == "Quảng Ngãi"
    # bad base64 padding does not raise
    assert decode_header_value("=?utf-8?B?R2nhuqV5IG3hu51?=").startswith("Giấy")
    assert decode_header_value(None) == ""


def test_raw_8bit_headers():
    utf8 = "Subject: Giấy mời họp\nFrom: a@b.vn\n".encode()
    assert parse_message(utf8 + b"\r\nx").subject == "Giấy mời họp"
    raw_name = cp1258("Tài liệu họp")
    pm = parse_message(b"Subject: " + raw_name + b"\r\nFrom: a@b.vn\r\n\r\nx")
    assert pm.subject == "Tài liệu họp"


def test_addresses_strict():
    d: list[str] = []
    assert [a.addr for a in parse_address_list('"a@b.com" <c@d.com>', d)] == ["c@d.com"]
    assert parse_address_list('"a@b.com" <c@d.com>')[0].name == "a@b.com"
    d = []
    assert [a.addr for a in parse_address_list("a@b.com,@evil", d)] == ["a@b.com"]
    assert d
    got = parse_address_list("=?utf-8?B?VsSDbiB0aMawIA==?= <vt@a.vn>, x@y@z, foo")
    assert [(a.name, a.addr) for a in got] == [("Văn thư", "vt@a.vn")]
    got = parse_address_list('"=?utf-8?Q?V=C4=83n_th=C6=B0?=" <vt@x.vn>')
    assert got[0].name == "Văn thư"
    assert parse_address_list("undisclosed-recipients:;") == []


# --- bodies ----------------------------------------------------------------------------------
def test_windows_1258_body_is_nfc():
    body = cp1258("Kính gửi: Các phòng. Giấy mời họp.")
    pm = parse_message(
        msg("From: a@b.vn\nSubject: x\nContent-Type: text/plain; charset=windows-1258\n", body)
    )
    assert pm.body_text == "Kính gửi: Các phòng. Giấy mời họp."


def test_tcvn3_body_recovered():
    text = "Uỷ ban nhân dân tỉnh Quảng Ngãi gửi giấy mời họp"
    body = encode_tcvn3(text).encode("latin-1")
    for cs in ("iso-8859-1", "windows-1252", "us-ascii"):
        pm = parse_message(msg(f"From: a@b.vn\nContent-Type: text/plain; charset={cs}\n", body))
        assert pm.body_text == text, cs


def test_mislabelled_utf8_body():
    body = "Báo cáo số 07/BC-STTTT".encode()
    for cs in ("us-ascii", "iso-8859-1", "windows-1258", "bogus-charset"):
        pm = parse_message(msg(f"From: a@b.vn\nContent-Type: text/plain; charset={cs}\n", body))
        assert pm.body_text == "Báo cáo số 07/BC-STTTT", cs
        assert pm.facts.symbol == "07/BC-STTTT"


def test_decode_bytes_fallbacks():
    assert decode_bytes(cp1258("Việt"), None) == "Việt"
    assert decode_bytes("café".encode("cp1252"), "iso-8859-1") == "café"
    assert decode_bytes(b"\xff\xfe", "utf-8")  # never raises


def test_html_only_body():
    html = b"<html><style>p{}</style><script>x()</script><p>Gi&#7845;y m&#7901;i</p><p>B&nbsp;2</p>"
    pm = parse_message(msg("From: a@b.vn\nContent-Type: text/html; charset=utf-8\n", html))
    assert pm.body_text == "Giấy mời\n\nB 2"


def test_bad_base64_body_does_not_raise():
    pm = parse_message(
        msg(
            "From: a@b.vn\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: base64\n",
            b"R2nhuqV5IG3hu51p!!!*\r\n===",
        )
    )
    assert pm.body_text.startswith("Giấy")


# --- attachments -----------------------------------------------------------------------------
MIXED = """From: a@b.vn
Subject: =?utf-8?Q?G=E1=BB=ADi_file?=
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="XX"

--XX
Content-Type: text/plain; charset=utf-8

Kính gửi.
--XX
Content-Type: application/pdf
Content-Transfer-Encoding: base64
Content-Disposition: attachment;
 filename*0*=utf-8''Gi%E1%BA%A5y%20m%E1%BB%9Di%20;
 filename*1*=27-GM-STC.pdf

JVBERi0=
--XX
Content-Type: application/octet-stream
Content-Disposition: attachment; filename="=?utf-8?B?QsOhbyBjw6Fv?=.docx"

AAAA
--XX
Content-Type: image/png
Content-Disposition: inline; filename="logo.png"
Content-ID: <logo>

iVBORw0KGgo=
--XX
Content-Type: application/pkcs7-signature; name="smime.p7s"
Content-Disposition: attachment; filename="smime.p7s"

AAAA
--XX
Content-Type: message/rfc822
Content-Disposition: attachment

From: c@d.vn
Subject: =?utf-8?Q?Th=C3=B4ng_b=C3=A1o?=

Số: 09/TB-VPUB
--XX--
"""


def test_attachments_names_and_count():
    pm = parse_message(MIXED.replace("\n", "\r\n").encode())
    names = [a.filename for a in pm.attachments]
    assert names[0] == "Giấy mời 27-GM-STC.pdf"  # RFC 2231 continuation, percent-encoded
    assert names[1] == "Báo cáo.docx"  # RFC 2047 inside quotes (non-standard, common)
    logo = pm.attachments[2]
    assert logo.inline and logo.filename == "logo.png"
    assert pm.attachments[3].is_signature
    fwd = pm.attachments[4]
    assert fwd.is_message and fwd.filename == "Thông báo.eml" and "09/TB-VPUB" in fwd.text
    # files people count: the pdf, the docx and the forwarded message
    assert len(pm.attachment_files) == 3
    assert pm.body_text == "Kính gửi."
    assert pm.facts.symbol == "27/GM-STC"
    assert pm.attachments[0].payload == b"%PDF-" and pm.attachments[0].size == 5


def test_missing_boundary_and_missing_close():
    no_boundary = msg("From: a@b.vn\nContent-Type: multipart/mixed\n", b"just text\r\n")
    pm = parse_message(no_boundary)
    assert pm.defects
    unclosed = msg(
        'From: a@b.vn\nContent-Type: multipart/mixed; boundary="B"\n',
        b"--B\r\nContent-Type: text/plain\r\n\r\nhi there\r\n",
    )
    pm = parse_message(unclosed)
    assert pm.body_text == "hi there"


def test_deep_nesting_is_bounded():
    depth = 3000
    parts = []
    for i in range(depth):
        parts.append(f'--b{i}\r\nContent-Type: multipart/mixed; boundary="b{i + 1}"\r\n\r\n')
    raw = (
        b'From: a@b.vn\r\nContent-Type: multipart/mixed; boundary="b0"\r\n\r\n'
        + "".join(parts).encode()
        + b"--b3000\r\nContent-Type: text/plain\r\n\r\ndeep\r\n"
    )
    t0 = time.monotonic()
    pm = parse_message(raw, limits=ParseLimits(max_depth=20))
    assert time.monotonic() - t0 < 10
    assert pm.defects


def test_many_parts_bounded():
    body = b"".join(
        b"--B\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="f.bin"\r\n\r\nAA==\r\n'
        for _ in range(300)
    )
    raw = msg('From: a@b.vn\nContent-Type: multipart/mixed; boundary="B"\n', body + b"--B--\r\n")
    pm = parse_message(raw, limits=ParseLimits(max_parts=50))
    assert len(pm.attachments) < 50
    assert any("too many MIME parts" in d for d in pm.defects)


def test_huge_header():
    raw = b"From: a@b.vn\r\nSubject: " + b"x" * 2_000_000 + b"\r\n\r\nbody"
    t0 = time.monotonic()
    pm = parse_message(raw)
    assert time.monotonic() - t0 < 10
    assert len(pm.subject) <= 64 * 1024
    assert pm.body_text == "body"


def test_garbage_input_never_raises():
    for raw in (b"", b"\x00\xff" * 100, b"\r\n\r\n", b"From:\r\n\r\n", b"--\r\n" * 1000):
        pm = parse_message(raw)
        assert pm.size == len(raw)


def test_calendar_part():
    ics = (
        "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nSUMMARY:Họp giao ban\r\n"
        "DTSTART:20260313T070000Z\r\nDTEND:20260313T090000Z\r\nLOCATION:Phòng họp 1\r\n"
        "ORGANIZER;CN=Văn thư:mailto:vt@x.vn\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    body = (
        b"--A\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nMoi hop\r\n"
        b"--A\r\nContent-Type: text/calendar; method=REQUEST; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(ics.encode())
        + b"--A--\r\n"
    )
    pm = parse_message(
        msg('From: a@b.vn\nContent-Type: multipart/alternative; boundary="A"\n', body)
    )
    cal = pm.calendar
    assert cal is not None and cal.method == "REQUEST" and cal.summary == "Họp giao ban"
    assert cal.location == "Phòng họp 1" and cal.organizer == "vt@x.vn"
    assert cal.start is not None and cal.start.hour == 7
    assert pm.attachment_files == []
    broken = body.replace(base64.encodebytes(ics.encode()), base64.encodebytes(b"BEGIN:VCAL"))
    pm = parse_message(
        msg('From: a@b.vn\nContent-Type: multipart/alternative; boundary="A"\n', broken)
    )
    assert pm.calendar is None and any("calendar" in d for d in pm.defects)


# --- facts -----------------------------------------------------------------------------------
def facts_of(subject: str, body: str):
    raw = f"From: a@b.vn\nSubject: {subject}\nContent-Type: text/plain; charset=utf-8\n\n{body}"
    return parse_message(raw.replace("\n", "\r\n").encode()).facts


def test_urgency_markings():
    assert facts_of("THƯỢNG KHẨN: Báo cáo", "x").urgency == "thuong_khan"
    assert facts_of("Re: [KHẨN] Thông báo", "x").urgency == "khan"
    assert facts_of("Giấy mời", "HOẢ TỐC\n\nKính gửi").urgency == "hoa_toc"
    assert facts_of("Giấy mời", "Hỏa tốc\nKính gửi").urgency == "hoa_toc"
    assert facts_of("x", "Thượng khẩn\nKính gửi").urgency == "thuong_khan"
    assert facts_of("x", "Độ khẩn: Khẩn\n").urgency == "khan"
    # prose is not a marking
    assert facts_of("x", "Đề nghị khẩn trương thực hiện; di dời khẩn cấp.").urgency == "thuong"
    assert facts_of("Báo cáo", "KHẨN TRƯƠNG triển khai").urgency == "thuong"


def test_confidentiality_markings():
    assert facts_of("x", "MẬT\nSố: 12/BC-CA").confidentiality == "mat"
    assert facts_of("[TỐI MẬT] Báo cáo", "x").confidentiality == "toi_mat"
    assert facts_of("x", "Độ mật: Tuyệt mật").confidentiality == "tuyet_mat"
    assert facts_of("x", "Giữ bí mật mật khẩu, mật độ dân số cao.").confidentiality is None


def test_reply_forward_markers():
    f = facts_of("Re: RE: Fwd: Báo cáo", "x")
    assert f.is_reply and f.is_forward
    assert facts_of("TL: Giấy mời", "x").is_reply
    assert facts_of("Trả lời: Giấy mời", "x").is_reply
    assert facts_of("Chuyển tiếp: Giấy mời", "x").is_forward
    assert facts_of("FW: x", "x").is_forward
    f = facts_of("Report on Fwd: marker", "x")
    assert not f.is_reply and not f.is_forward


def test_own_number_date_issuer_summary():
    body = (
        "Kính gửi: Các sở.\n\nỦY BAN NHÂN DÂN\nTỈNH QUẢNG NGÃI\nSố: 215 /GM- UBND\n"
        "Quảng Ngãi, ngày 18 tháng 10 năm 2026\n\nGIẤY MỜI\nHọp trực tuyến ứng phó bão số 5\n\n"
        "Căn cứ Quyết định số 52/QĐ-TTT ngày 20/4/2026;"
    )
    f = facts_of("Giấy mời họp", body)
    assert f.symbol == "215/GM-UBND"
    assert f.doc_type == "GM" and f.doc_type_name == "Giấy mời"
    assert str(f.doc_date) == "2026-10-18"
    assert f.issuer == "ỦY BAN NHÂN DÂN TỈNH QUẢNG NGÃI"
    assert f.summary == "Họp trực tuyến ứng phó bão số 5"
    assert f.cited_symbols == ["52/QĐ-TTT"]


def test_only_cited_numbers_and_blank_draft_number_give_no_symbol():
    f = facts_of("Tài liệu họp", "Thực hiện Giấy mời số 45/GM-UBND ngày 09/3/2026 của UBND tỉnh.")
    assert f.symbol is None and f.cited_symbols == ["45/GM-UBND"]
    f = facts_of("Dự thảo", "DỰ THẢO\nSố:      /QĐ-UBND\nQUYẾT ĐỊNH")
    assert f.symbol is None


def test_cong_van_and_numeric_date():
    f = facts_of("V/v phòng chống dịch", "Văn phòng gửi Công văn số 523/UBND-VX ngày 10/02/2026.")
    assert f.symbol == "523/UBND-VX"
    assert f.doc_type is None and f.doc_type_name == "Công văn"
    assert str(f.doc_date) == "2026-02-10"
