"""Keep leases on claimed messages alive while a worker is busy with them.

A lease is short so that work held by a dead process (kill -9, a lost node) is taken over
quickly; a live worker renews it every third of its length for as long as it works.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from mailgw.db.models import Message, utcnow

log = logging.getLogger(__name__)


def renew(sessions: sessionmaker[Session], ids: list[int], owner: str, lease: dt.timedelta) -> None:
    with sessions() as session, session.begin():
        session.execute(
            update(Message)
            .where(Message.id.in_(ids), Message.lease_owner == owner)
            .values(lease_until=utcnow() + lease)
        )


@contextlib.asynccontextmanager
async def kept_alive(
    sessions: sessionmaker[Session], ids: list[int], owner: str, lease: dt.timedelta
) -> AsyncIterator[None]:
    async def keep() -> None:
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            try:
                await asyncio.to_thread(renew, sessions, ids, owner, lease)
            except Exception as exc:  # the database may be briefly away; try again next time
                log.warning("cannot renew leases: %s", exc)

    task = asyncio.create_task(keep())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
