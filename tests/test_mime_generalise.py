"""Unit checks for the reader changes made while generalising beyond the dev corpus."""

from __future__ import annotations

from mailgw.mime.parse import parse_message, sender_kind
from mailgw.mime.symbols import find_mentions, symbol_from_filename


def test_filename_type_space_number_issuer():
    assert symbol_from_filename("BC 58-UBND.pdf") == "58/BC-UBND"
    assert symbol_from_filename("GM 23-PGDĐT.pdf") == "23/GM-PGDĐT"
    assert symbol_from_filename("GM_45-UBND.pdf") == "45/GM-UBND"
    assert symbol_from_filename("TB 67 lich lam viec tuan 20.pdf") is None
    assert symbol_from_filename("CV 215 giai ngan ODA.pdf") is None


def test_citation_list_continues_until_the_item_ends():
    text = (
        "Thực hiện Nghị quyết số 19-NQ/TW ngày 16/6/2022 của Trung ương và Kế hoạch số "
        "38-KH/TU của Tỉnh ủy; Sở gửi Báo cáo số 41/BC-UBND."
    )
    roles = {m.symbol: m.role for m in find_mentions(text)}
    assert roles == {"19-NQ/TW": "cited", "38-KH/TU": "cited", "41/BC-UBND": "own"}


def test_sender_kind():
    assert sender_kind([("Auto-Submitted", "auto-replied")], "x") == "robot"
    assert sender_kind([], "Automatic reply: Giấy mời 45/GM-UBND") == "robot"
    assert sender_kind([], "Trả lời tự động: V/v góp ý") == "robot"
    assert sender_kind([("List-Id", "<a.b>")], "Bản tin") == "list"
    assert sender_kind([("Auto-Submitted", "no")], "Re: Báo cáo") == "person"


MSG = """From: a@b.vn
Subject: Van ban
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="XX"

--XX
Content-Type: text/plain; charset=utf-8

Gửi anh.
--XX
Content-Type: application/pdf; name="12-HD-SNV.pdf"
Content-Disposition: inline; filename="12-HD-SNV.pdf"
Content-Transfer-Encoding: base64

JVBERi0=
--XX
Content-Type: application/octet-stream; name="12-HD-SNV.pdf.sig"
Content-Disposition: attachment; filename="12-HD-SNV.pdf.sig"

AAAA
--XX--
"""


def test_inline_pdf_is_a_file_and_sig_is_a_signature():
    pm = parse_message(MSG.replace("\n", "\r\n").encode(), extract_text=False)
    pdf, sig = pm.attachments
    assert not pdf.inline and pdf.is_file
    assert sig.is_signature
    assert len(pm.attachment_files) == 1
    assert pm.facts.symbol == "12/HD-SNV"


def test_robot_mail_has_no_own_symbol():
    raw = (
        "From: no-reply@qlvb.vn\r\nAuto-Submitted: auto-generated\r\n"
        "Subject: =?utf-8?Q?V=C4=83n_b=E1=BA=A3n_m=E1=BB=9Bi?=\r\n\r\n"
        "1. Số 215/QĐ-UBND ngày 08/5/2026\r\n2. Số 67/TB-VPUB ngày 08/5/2026\r\n"
    ).encode()
    pm = parse_message(raw, extract_text=False)
    assert pm.facts.symbol is None
    assert set(pm.facts.cited_symbols) == {"215/QĐ-UBND", "67/TB-VPUB"}


def test_docx_header_table_stays_on_top_of_a_long_document():
    import io

    import docx

    from mailgw.mime.extract import ExtractLimits, extract_text

    d = docx.Document()
    t = d.add_table(rows=2, cols=2)
    t.cell(0, 0).text = "UBND TỈNH QUẢNG NGÃI\nSỞ NỘI VỤ"
    t.cell(0, 1).text = "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"
    t.cell(1, 0).text = "Số: 77/KH-SNV"
    t.cell(1, 1).text = "Quảng Ngãi, ngày 06 tháng 5 năm 2026"
    d.add_paragraph("KẾ HOẠCH")
    for i in range(60):
        d.add_paragraph(f"{i}. Nội dung thực hiện nhiệm vụ cải cách hành chính năm 2026.")
    buf = io.BytesIO()
    d.save(buf)
    text, err = extract_text(
        buf.getvalue(), "application/octet-stream", "kh.docx", limits=ExtractLimits(isolate=False)
    )
    assert err is None
    assert text.index("Số: 77/KH-SNV") < text.index("KẾ HOẠCH") < 200
