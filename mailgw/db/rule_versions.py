"""The stored rules versions: which text is active, and since when."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailgw.db.models import RuleVersion, utcnow


def activate_version(session: Session, text: str, sha256: str, source: str) -> None:
    """Make ``text`` the one active version: stored the first time it is seen, marked active
    again (now) when it comes back, e.g. a rollback to an earlier file."""
    now = utcnow()
    session.execute(update(RuleVersion).values(active=False))
    row = session.scalar(select(RuleVersion).where(RuleVersion.sha256 == sha256))
    if row is None:
        session.add(RuleVersion(sha256=sha256, source=source, text=text, active=True,
                                loaded_at=now, activated_at=now))  # fmt: skip
    else:
        row.active, row.activated_at = True, now
