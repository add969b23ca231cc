"""text/calendar parts (iCalendar, RFC 5545) read with the ``icalendar`` library."""

from __future__ import annotations

import datetime as dt

from .model import CalendarEvent
from .text import nfc

__all__ = ["parse_calendar"]


def _when(prop: object) -> dt.datetime | None:
    value = getattr(prop, "dt", None)
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    return None


def _text(prop: object) -> str | None:
    if prop is None:
        return None
    s = nfc(str(prop)).strip()
    return s or None


def parse_calendar(data: bytes | str, defects: list[str]) -> CalendarEvent | None:
    """The first VEVENT with METHOD, DTSTART, DTEND, LOCATION, ORGANIZER, SUMMARY.

    A calendar that does not parse, or has no VEVENT, gives None and a defect.
    """
    try:
        from icalendar import Calendar

        cal = Calendar.from_ical(data)
        method = _text(cal.get("METHOD"))
        for ev in cal.walk("VEVENT"):
            organizer = _text(ev.get("ORGANIZER"))
            if organizer and organizer.lower().startswith("mailto:"):
                organizer = organizer[7:]
            return CalendarEvent(
                method=method.upper() if method else None,
                summary=_text(ev.get("SUMMARY")),
                start=_when(ev.get("DTSTART")),
                end=_when(ev.get("DTEND")),
                location=_text(ev.get("LOCATION")),
                organizer=organizer,
            )
        defects.append("calendar part without VEVENT")
        return None
    except Exception as exc:
        defects.append(f"broken calendar part: {exc.__class__.__name__}")
        return None
