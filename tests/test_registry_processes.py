"""The register with real `mailgw serve` processes: kill -9 in the middle of registering leaves
no gap and no duplicate; two gateway processes on one PostgreSQL number 1..N together."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailgw.db.engine import make_engine, make_sessionmaker
from mailgw.db.models import PROCESSING, SPOOLED, Message
from mailgw.registry.audit import verify_archive, verify_registers
from mailgw.registry.blobs import FileBlobStore
from mailgw.registry.models import RegisterEntry
from tests.conftest import PG_URL
from tests.gateway_process import GatewayProcess, write_config
from tests.load import Senders

ENVELOPE = {"mail_from": "vp@example.gov.vn", "rcpt": "lanhdao@example.gov.vn"}


def invitation(token: str) -> bytes:
    number = int(token.rsplit("-", 1)[-1]) + 1
    return (
        f"From: vp@example.gov.vn\r\nTo: lanhdao@example.gov.vn\r\n"
        f"Subject: =?utf-8?Q?Gi=E1=BA=A5y_m=E1=BB=9Di_h=E1=BB=8Dp?= {token}\r\n"
        f"Message-ID: <{token}@example.gov.vn>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"Số: {number}/GM-UBND\r\nKính mời các đồng chí dự họp giao ban ({token}).\r\n"
    ).encode()


def wait_processed(sessions, count: int, timeout: float = 90.0) -> None:
    """Until at least ``count`` messages exist and none waits for the pipeline (a dead node's
    lease runs out first on PostgreSQL)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as session:
            total = session.scalar(select(func.count()).select_from(Message))
            waiting = session.scalar(
                select(func.count()).where(Message.state.in_((SPOOLED, PROCESSING)))
            )
        if total >= count and not waiting:
            return
        time.sleep(0.2)
    raise AssertionError(f"{waiting} of {total} messages still wait for the pipeline")


def check_register(sessions, data_dir: Path, acked: set[str]) -> None:
    with sessions() as session:
        rows = session.execute(
            select(RegisterEntry.number, Message.subject)
            .join(Message, Message.id == RegisterEntry.message_row_id)
            .where(RegisterEntry.register == "default")
        ).all()
        store = FileBlobStore.in_data_dir(data_dir)
        [report] = verify_registers(session, store)
        assert report.ok, report.problems
        assert verify_archive(session, store).problems == []
    numbers = sorted(n for n, _ in rows)
    assert numbers == list(range(1, len(numbers) + 1)), "gap or duplicate"
    registered = {subject.rsplit(" ", 1)[-1] for _, subject in rows}
    assert len(registered) == len(rows), "a message registered twice"
    assert acked <= registered, f"acknowledged but not registered: {sorted(acked - registered)[:5]}"


def test_kill_9_while_registering_leaves_no_gap_and_no_duplicate(
    tmp_path: Path, database_url: str
) -> None:
    config = tmp_path / "mailgw.toml"
    ports = write_config(config, tmp_path / "data", database_url, pipeline={"workers": 4})
    gateway = GatewayProcess(config, ports["smtp"], tmp_path / "mailgw.log")
    acked: set[str] = set()
    try:
        for cycle in range(2):
            gateway.start()
            with Senders([ports["smtp"]], 8, invitation, prefix=f"k{cycle}", **ENVELOPE) as senders:
                senders.wait_for(60 + 40 * cycle)
                gateway.kill()  # mid-load: spooling, parsing and registering in flight
            acked |= set(senders.acked)
        gateway.start()
        engine = make_engine(database_url)
        sessions = make_sessionmaker(engine)
        try:
            wait_processed(sessions, len(acked))
            check_register(sessions, tmp_path / "data", acked)
        finally:
            engine.dispose()
    finally:
        gateway.stop()
    assert len(acked) >= 100


def test_two_gateway_processes_on_one_postgresql(tmp_path: Path, database_url: str) -> None:
    if not PG_URL:
        pytest.skip("several gateway nodes need PostgreSQL (MAILGW_TEST_DATABASE_URL)")
    gateways, ports = [], []
    for i in range(2):
        config = tmp_path / f"node{i}.toml"
        # One data folder (a shared filesystem in production): spool files and blobs.
        port = write_config(config, tmp_path / "data", database_url, pipeline={"workers": 4})
        ports.append(port["smtp"])
        gateways.append(GatewayProcess(config, port["smtp"], tmp_path / f"node{i}.log"))
    total = 300
    try:
        for gw in gateways:
            gw.start()
        with Senders(ports, 12, invitation, prefix="n", limit=total, **ENVELOPE) as senders:
            for t in senders.threads:
                t.join(120)
        assert len(senders.acked) == total
        engine = make_engine(database_url)
        sessions = make_sessionmaker(engine)
        try:
            wait_processed(sessions, total)
            check_register(sessions, tmp_path / "data", set(senders.acked))
        finally:
            engine.dispose()
        for gw in gateways:  # both nodes took numbers from the one sequence
            assert "registered default 2026/" in gw.log_path.read_text(), gw.log()
    finally:
        for gw in gateways:
            gw.stop()
