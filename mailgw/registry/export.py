"""Printing and exporting the register: CSV for machines, HTML for the printed register (A4
landscape, the ten columns of Decree 30/2020 appendix IV), from ``templates/register.html.j2``.

One line per number: the latest revision of each entry (a correction replaces the values shown,
and the notes say so); repeated arrivals of the same document are listed with it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgw.registry.models import RegisterArrival, RegisterEntry
from mailgw.registry.numbering import DEFAULT_TIMEZONE

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"

CSV_FIELDS = (
    "register", "year", "number", "arrival", "issuer", "doc_symbol", "doc_date", "summary",
    "unit", "urgency", "confidentiality", "notes", "filename", "sha256", "message_id",
    "doc_type", "doc_type_name", "transfer_date", "received_by", "content_type", "size",
    "revision", "repeat_arrivals",
)  # fmt: skip

URGENCY_NAMES = {"thuong": "", "khan": "Khẩn", "thuong_khan": "Thượng khẩn", "hoa_toc": "Hỏa tốc"}
CONFIDENTIALITY_NAMES = {"mat": "Mật", "toi_mat": "Tối mật", "tuyet_mat": "Tuyệt mật"}


@dataclass
class Line:
    """One line of the printed register."""

    entry: RegisterEntry
    arrival: dt.datetime  # local time
    repeats: list[dt.datetime] = field(default_factory=list)  # local times

    @property
    def type_and_summary(self) -> str:
        name, summary = self.entry.doc_type_name or "", self.entry.summary or ""
        if name and not summary.lower().startswith(name.lower()):
            return f"{name}: {summary}" if summary else name
        return summary

    @property
    def notes(self) -> str:
        e = self.entry
        urgency = URGENCY_NAMES.get(e.urgency, e.urgency)
        secrecy = CONFIDENTIALITY_NAMES.get(e.confidentiality or "", "")
        parts = [p for p in (urgency, secrecy, e.notes) if p]
        if self.repeats:
            parts.append(
                "Nhận lại: " + ", ".join(t.strftime("%d/%m/%Y %H:%M") for t in self.repeats)
            )
        return "; ".join(parts)


def register_lines(
    session: Session,
    register: str,
    year: int,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    timezone: str = DEFAULT_TIMEZONE,
) -> list[Line]:
    tz = ZoneInfo(timezone)
    query = select(RegisterEntry).where(
        RegisterEntry.register == register, RegisterEntry.year == year
    )
    if date_from:
        start = dt.datetime.combine(date_from, dt.time(), tz)
        query = query.where(RegisterEntry.arrival >= start)
    if date_to:
        end = dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(), tz)
        query = query.where(RegisterEntry.arrival < end)
    latest: dict[int, RegisterEntry] = {}
    for entry in session.scalars(query.order_by(RegisterEntry.number, RegisterEntry.revision)):
        latest[entry.number] = entry  # the last revision wins
    repeats: dict[int, list[dt.datetime]] = {}
    if latest:
        first_ids = dict(
            session.execute(
                select(RegisterEntry.number, RegisterEntry.id).where(
                    RegisterEntry.register == register,
                    RegisterEntry.year == year,
                    RegisterEntry.revision == 0,
                    RegisterEntry.number.in_(list(latest)),
                )
            ).all()
        )
        by_id = {entry_id: number for number, entry_id in first_ids.items()}
        rows = session.execute(
            select(RegisterArrival.entry_id, RegisterArrival.arrival)
            .where(RegisterArrival.entry_id.in_(list(by_id)))
            .order_by(RegisterArrival.arrival)
        ).all()
        for entry_id, when in rows:
            repeats.setdefault(by_id[entry_id], []).append(when.astimezone(tz))
    return [
        Line(e, e.arrival.astimezone(tz), repeats.get(number, []))
        for number, e in sorted(latest.items())
    ]


def to_csv(lines: list[Line]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_FIELDS)
    for line in lines:
        e = line.entry
        values = {
            "register": e.register, "year": e.year, "number": e.number,
            "arrival": line.arrival.isoformat(timespec="seconds"), "issuer": e.issuer,
            "doc_symbol": e.doc_symbol, "doc_date": e.doc_date.isoformat() if e.doc_date else "",
            "summary": e.summary, "unit": e.unit, "urgency": e.urgency,
            "confidentiality": e.confidentiality, "notes": e.notes, "filename": e.filename,
            "sha256": e.sha256, "message_id": e.message_id, "doc_type": e.doc_type,
            "doc_type_name": e.doc_type_name, "transfer_date": "", "received_by": "",
            "content_type": e.content_type, "size": e.size, "revision": e.revision,
            "repeat_arrivals": " ".join(t.isoformat(timespec="seconds") for t in line.repeats),
        }  # fmt: skip
        writer.writerow(["" if values[k] is None else values[k] for k in CSV_FIELDS])
    return out.getvalue()


def to_html(
    lines: list[Line],
    register: str,
    year: int,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    templates: Path = TEMPLATES_DIR,
) -> str:
    env = Environment(
        loader=FileSystemLoader(str(templates)),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("register.html.j2").render(
        lines=lines, register=register, year=year, date_from=date_from, date_to=date_to
    )
