"""The database goes away under the gateway: clients get 451, nothing accepted is lost."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from mailgw.config import Config
from mailgw.db.models import Message
from tests.conftest import PG_URL
from tests.smtp_server import DownstreamSMTP
from tests.tcp_proxy import TcpProxy
from tests.test_gateway_relay import CORPUS_LIKE, relay_to, send, wait_state


@pytest.fixture
def downstream() -> Iterator[DownstreamSMTP]:
    with DownstreamSMTP() as srv:
        yield srv


@pytest.mark.skipif(not PG_URL, reason="a database server to cut off needs PostgreSQL")
async def test_database_down_answers_451_and_loses_nothing(
    config: Config, database_url: str, make_gateway, downstream: DownstreamSMTP
) -> None:
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        config.storage.database_url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
        gw = await make_gateway(relay_to(config, downstream))
        _, before = await send(gw, CORPUS_LIKE, ["lanhdao@example.gov.vn"])
        await wait_state(gw, before.rsplit(" ", 1)[-1], ("relayed",))

        proxy.cut()
        with pytest.raises(smtplib.SMTPDataError) as info:
            await send(gw, CORPUS_LIKE.replace(b"relay-1", b"during"), ["lanhdao@example.gov.vn"])
        assert info.value.smtp_code == 451 and b"4.3.0" in info.value.smtp_error
        spool = config.storage.data_dir / "spool"
        assert len(list(spool.rglob("*.eml"))) == 1  # the refused message left nothing behind

        proxy.restore()
        _, after = await send(
            gw, CORPUS_LIKE.replace(b"relay-1", b"after"), ["lanhdao@example.gov.vn"]
        )
        await wait_state(gw, after.rsplit(" ", 1)[-1], ("relayed",))
        with gw.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Message)) == 2
        got = await downstream.async_wait_for_messages(2)
        assert sorted(b"<after@" in m.data for m in got) == [False, True]
    finally:
        proxy.stop()
