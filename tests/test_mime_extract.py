"""Attachment text extraction: formats generated here, broken/encrypted files, limits."""

from __future__ import annotations

import io
import zipfile

import docx
import openpyxl
import pypdf

from mailgw.mime.extract import ExtractLimits, extract_text, rtf_to_text

INPROC = ExtractLimits(isolate=False)


def make_pdf(text: str) -> bytes:
    """A minimal valid one-page PDF showing ``text`` (ASCII) in Helvetica."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def encrypt(pdf: bytes) -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password="secret", owner_password="owner")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def test_pdf_text_in_process_and_isolated():
    pdf = make_pdf("So: 45/GM-UBND Giay moi")
    for limits in (INPROC, ExtractLimits()):
        text, err = extract_text(pdf, "application/pdf", "a.pdf", limits=limits)
        assert err is None and "45/GM-UBND" in text


def test_pdf_encrypted_and_broken():
    text, err = extract_text(encrypt(make_pdf("x")), "application/pdf", "e.pdf", limits=INPROC)
    assert text == "" and err == "encrypted"
    text, err = extract_text(b"%PDF-1.4\nnot really", "application/pdf", "b.pdf", limits=INPROC)
    assert text == "" and err and err.startswith("broken")
    text, err = extract_text(b"%PDF-1.4\nnot really", "application/pdf", "b.pdf")
    assert text == "" and err


def test_docx_xlsx_generated():
    d = docx.Document()
    d.add_paragraph("Số: 12/BC-STTTT")
    d.add_paragraph("Báo cáo tình hình")
    table = d.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Ô một"
    buf = io.BytesIO()
    d.save(buf)
    text, err = extract_text(buf.getvalue(), "application/octet-stream", "x.docx", limits=INPROC)
    assert err is None and "12/BC-STTTT" in text and "Ô một" in text

    wb = openpyxl.Workbook()
    wb.active.title = "Số liệu"
    wb.active.append(["Huyện", "Giải ngân"])
    wb.active.append(["Sơn Hà", 41870])
    buf = io.BytesIO()
    wb.save(buf)
    text, err = extract_text(buf.getvalue(), "application/vnd.ms-excel", "s.xlsx", limits=INPROC)
    assert err is None and "Sơn Hà\t41870" in text and "Số liệu" in text


def _odt(content: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        zf.writestr("content.xml", content)
    return buf.getvalue()


def test_odt_generated_and_broken():
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
        ' xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body><office:text>'
        "<text:p>Thông báo số 05/TB-STTTT</text:p><text:p>nghỉ Tết<text:s/>2026</text:p>"
        "</office:text></office:body></office:document-content>"
    ).encode()
    text, err = extract_text(_odt(xml), "application/octet-stream", "t.odt", limits=INPROC)
    assert err is None and text == "Thông báo số 05/TB-STTTT\nnghỉ Tết 2026"
    text, err = extract_text(_odt(b"<broken"), "", "t.odt", limits=INPROC)
    assert text == "" and err and "broken" in err
    text, err = extract_text(b"PK\x03\x04garbage", "", "t.docx", limits=INPROC)
    assert text == "" and err


def test_zip_bomb_declared_size_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("word/document.xml", b"\0" * 5_000_000)
    small = ExtractLimits(isolate=False, max_unzipped=1_000_000)
    text, err = extract_text(buf.getvalue(), "", "bomb.docx", limits=small)
    assert text == "" and err and "too large" in err


def test_size_and_time_limits():
    pdf = make_pdf("hello")
    text, err = extract_text(pdf, "application/pdf", "a.pdf", limits=ExtractLimits(max_bytes=10))
    assert text == "" and err and err.startswith("too large")
    text, err = extract_text(pdf, "application/pdf", "a.pdf", limits=ExtractLimits(timeout=0.0001))
    assert text == "" and err and "longer than" in err


def test_text_html_rtf_and_unknown():
    assert extract_text("Giấy mời".encode(), "text/plain", "a.txt") == ("Giấy mời", None)
    html = b"<p>B&aacute;o c&aacute;o</p><script>x</script>"
    assert extract_text(html, "text/html", "a.html") == ("Báo cáo", None)
    rtf = rb"{\rtf1\ansi\ansicpg1252{\fonttbl{\f0 Arial;}}\f0 Gi\u7845?y m\u7901?i\par caf\'e9}"
    assert rtf_to_text(rtf) == "Giấy mời\ncafé"
    assert extract_text(rtf, "application/rtf", "a.rtf")[0] == "Giấy mời\ncafé"
    assert extract_text(b"\x89PNG....", "image/png", "a.png") == ("", None)
