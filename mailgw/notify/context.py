"""What a notification template sees (plain data): the message that triggered it, when the
rules ask for it; the caller's variables, when the API is asked."""

from __future__ import annotations

from typing import Any

from mailgw.pipeline import Job


def gateway_context(agency: str, hostname: str) -> dict[str, Any]:
    """``gateway``: filled in by the gateway in every notification, whoever asks for it."""
    return {"agency": agency, "hostname": hostname}


def request_context(variables: dict[str, Any], agency: str, hostname: str) -> dict[str, Any]:
    """A notification asked for through the API: the caller's variables, and ``gateway``
    (a caller cannot set it)."""
    return {**variables, "gateway": gateway_context(agency, hostname)}


def message_context(job: Job, agency: str, hostname: str) -> dict[str, Any]:
    parsed = job.parsed
    facts = parsed.facts if parsed else None
    calendar = parsed.calendar if parsed else None
    return {
        "gateway": gateway_context(agency, hostname),
        "message": {
            "queue_id": job.queue_id,
            "subject": parsed.subject if parsed else "",
            "from": ", ".join(f"{a.name} <{a.addr}>" if a.name else a.addr for a in parsed.from_)
            if parsed
            else "",
            "mail_from": job.mail_from,
            "rcpt_to": list(job.rcpt_to),
            "received_at": job.received_at.astimezone().strftime("%H:%M ngày %d/%m/%Y"),
            "category": job.category or "other",
            "tags": list(job.tags),
            "hold_reason": job.hold_reason,
            "symbol": facts.symbol if facts else None,
            "urgency": facts.urgency if facts else "thuong",
            "calendar": {
                "start": calendar.start.strftime("%H:%M %d/%m/%Y") if calendar.start else None,
                "end": calendar.end.strftime("%H:%M %d/%m/%Y") if calendar.end else None,
                "location": calendar.location,
                "summary": calendar.summary,
            }
            if calendar
            else None,
        },
        "documents": [
            {
                "register": r.register,
                "year": r.year,
                "number": r.number,
                "symbol": r.symbol,
                "filename": r.filename,
            }
            for r in job.registered
        ],
    }
