"""Notification templates: rendering in a sandbox, composing a message, clear errors."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from mailgw.notify.compose import compose
from mailgw.notify.render import NotificationError, NotificationTemplates

CONTEXT = {
    "gateway": {"agency": "Sở Thông tin và Truyền thông", "hostname": "mailgw.test"},
    "message": {
        "queue_id": "ABC123", "subject": "Báo cáo tháng 3", "from": "Văn thư <vt@x.gov.vn>",
        "mail_from": "vt@x.gov.vn", "rcpt_to": ["a@x.gov.vn"],
        "received_at": "09:00 ngày 01/04/2026",
        "category": "report", "tags": ["official"], "hold_reason": None, "symbol": "07/BC-STTTT",
        "urgency": "khan", "calendar": None,
    },
    "documents": [{"register": "default", "year": 2026, "number": 17, "symbol": "07/BC-STTTT",
                   "filename": "bao-cao.pdf"}],
}  # fmt: skip


def test_packaged_templates_render() -> None:
    templates = NotificationTemplates()
    assert {"receipt", "meeting-notice", "alert"} <= set(templates.names())
    receipt = templates.render("receipt", CONTEXT)
    assert receipt.subject == "Xác nhận đã nhận văn bản / Receipt: Báo cáo tháng 3"
    assert "Số đến 17/2026 (sổ default), văn bản số 07/BC-STTTT, tệp bao-cao.pdf" in receipt.body
    assert "Incoming number 17/2026" in receipt.body
    alert = templates.render("alert", CONTEXT)
    assert "official" in alert.body and "ABC123" in alert.subject + alert.body


def test_the_api_templates_need_only_their_own_variables() -> None:
    """notice and meeting are for POST /notifications: a few plain variables, the optional
    ones may be left out (StrictUndefined refuses only the required ones)."""
    templates = NotificationTemplates()
    gateway = CONTEXT["gateway"]
    text = "Trụ sở cắt điện từ 7 giờ.\nĐề nghị lưu ý."
    notice = templates.render(
        "notice", {"gateway": gateway, "subject": "Lịch cắt điện ngày 5/4", "body": text}
    )
    assert notice.subject == "Lịch cắt điện ngày 5/4"
    assert text in notice.body
    assert "Sở Thông tin và Truyền thông" in notice.body and "Reference" not in notice.body
    signed = templates.render("notice", {"gateway": gateway, "subject": "s", "body": "b",
                                         "unit": "Văn phòng", "reference": "12/TB-VP"})  # fmt: skip
    assert "Văn phòng thông báo" in signed.body and "12/TB-VP" in signed.body
    meeting = templates.render("meeting", {
        "gateway": gateway, "title": "Giao ban tháng 4", "start": "08:00 15/04/2026",
        "location": "Phòng họp số 2", "attendees": ["Lãnh đạo Sở", "Chánh Văn phòng"],
    })  # fmt: skip
    assert meeting.subject == "[Lịch họp / Meeting] Giao ban tháng 4 – 08:00 15/04/2026"
    assert "Thành phần / Attendees: Lãnh đạo Sở, Chánh Văn phòng" in meeting.body
    assert "Chủ trì" not in meeting.body
    with pytest.raises(NotificationError, match="location"):
        templates.render("meeting", {"gateway": gateway, "title": "t", "start": "s"})
    assert {"title", "start", "location"} <= set(templates.variables("meeting"))


def test_override_folder_and_errors(tmp_path: Path) -> None:
    (tmp_path / "receipt.txt.j2").write_text(
        "{% block subject %}Đã nhận {{ message.queue_id }}{% endblock %}"
        "{% block body %}Cảm ơn.{% endblock %}"
    )
    (tmp_path / "broken.txt.j2").write_text("{% block subject %}{{ message.nope }}{% endblock %}"
                                            "{% block body %}x{% endblock %}")  # fmt: skip
    (tmp_path / "evil.txt.j2").write_text(
        "{% block subject %}{{ ''.__class__.__mro__ }}{% endblock %}{% block body %}{% endblock %}"
    )
    templates = NotificationTemplates([tmp_path])
    assert templates.render("receipt", CONTEXT).subject == "Đã nhận ABC123"
    with pytest.raises(NotificationError, match="no notification template 'missing'"):
        templates.render("missing", CONTEXT)
    with pytest.raises(NotificationError, match="broken"):
        templates.render("broken", CONTEXT)
    with pytest.raises(NotificationError):  # the sandbox refuses private attributes
        templates.render("evil", CONTEXT)
    with pytest.raises(NotificationError, match="bad template name"):
        templates.render("../etc/passwd", CONTEXT)


def test_compose_builds_a_proper_auto_submitted_message() -> None:
    raw = compose(subject="Xác nhận đã nhận văn bản", body="Số đến 17/2026\n",
                  from_addr="mailgw@x.gov.vn", to=["vt@x.gov.vn"], hostname="mailgw.test",
                  in_reply_to="<m1@x.gov.vn>")  # fmt: skip
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == "Xác nhận đã nhận văn bản"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["In-Reply-To"] == "<m1@x.gov.vn>"
    assert msg.get_content().strip() == "Số đến 17/2026"
