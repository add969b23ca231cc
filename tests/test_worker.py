"""Pipeline processes: they follow the active rules version and are restarted when they die."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mailgw import accounts
from mailgw.db.engine import make_engine, make_sessionmaker
from mailgw.db.models import Message, RuleVersion
from mailgw.worker import DatabaseRules
from tests.gateway_process import GatewayProcess, write_config
from tests.smtp_client import send_message

RULES = '[[rule]]\nname = "tag-{0}"\nthen = {{ tags = ["{0}"] }}\n'


def store_version(sessions, text: str, sha: str) -> None:
    with sessions() as session, session.begin():
        for row in session.scalars(select(RuleVersion)):
            row.active = False
        session.add(RuleVersion(sha256=sha, source="test", text=text, active=True))


def test_database_rules_follow_the_active_version(database_url: str) -> None:
    from mailgw.db.migrate import upgrade
    from mailgw.rules.loader import load_rules

    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    rules = DatabaseRules(sessions)
    assert rules.active.version == load_rules(rules.active.text, "x").version  # default rules
    text = RULES.format("mot")
    store_version(sessions, text, load_rules(text).version)
    rules.refresh()
    assert rules.active.names == ["tag-mot"]
    store_version(sessions, "[[rule]]\nname = 1\n", "0" * 64)  # broken: the last good stays
    rules.refresh()
    assert rules.active.names == ["tag-mot"]
    engine.dispose()


@pytest.fixture
def gateway(tmp_path: Path, database_url: str) -> Iterator[tuple[GatewayProcess, Path]]:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES.format("mot"))
    config = tmp_path / "mailgw.toml"
    ports = write_config(config, tmp_path / "data", database_url,
                         rules={"file": str(rules), "poll_seconds": 0.2},
                         pipeline={"processes": 1, "poll_seconds": 0.05})  # fmt: skip
    proc = GatewayProcess(config, ports["smtp"], tmp_path / "mailgw.log")
    proc.api_port = ports["api"]
    yield proc, rules
    proc.stop()


def tags_of(database_url: str, queue_id: str, timeout: float = 20.0) -> list[str]:
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with sessions() as session:
                row = session.scalar(select(Message).where(Message.queue_id == queue_id))
                if row is not None and row.tags is not None:
                    return row.tags
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise AssertionError(f"{queue_id} was not processed in {timeout}s")


def send(port: int, n: int) -> str:
    data = f"Subject: {n}\r\nFrom: a@example.gov.vn\r\n\r\nx\r\n".encode()
    _, reply = send_message("127.0.0.1", port, "a@example.gov.vn", ["b@example.gov.vn"], data)
    return reply.rsplit(" ", 1)[-1]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_pipeline_process_follows_reload_and_is_restarted(gateway, database_url: str) -> None:
    proc, rules = gateway
    proc.start()
    assert tags_of(database_url, send(proc.smtp_port, 1)) == ["mot"]

    rules.write_text(RULES.format("hai"))  # the gateway reloads it and marks it active
    deadline = time.monotonic() + 20
    while tags_of(database_url, send(proc.smtp_port, 2)) != ["hai"]:
        assert time.monotonic() < deadline, "the pipeline process never took the new rules"

    assert proc.proc is not None
    before = children(proc.proc.pid)
    workers = [p for p in before if "pipeline" in Path(f"/proc/{p}/cmdline").read_text()
               or "spawn" in Path(f"/proc/{p}/cmdline").read_text()]  # fmt: skip
    assert workers, f"no pipeline process among {before}"
    os.kill(workers[0], signal.SIGKILL)
    # the gateway notices within a second or two and starts another one
    assert tags_of(database_url, send(proc.smtp_port, 3), timeout=30) == ["hai"]
    assert proc.terminate(60) == 0


def metric(text: str, name: str) -> float:
    """The value of the sample ``name`` (with its labels, as printed) in a /metrics page."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} is not in /metrics")


def test_metrics_include_the_pipeline_processes(gateway, database_url: str) -> None:
    """The pipeline runs in a child process; its counters and histograms (processing latency,
    rule evaluation time) still reach the gateway's /metrics."""
    proc, _ = gateway
    proc.start()
    for n in (1, 2):
        tags_of(database_url, send(proc.smtp_port, n))
    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as session, session.begin():
        token = accounts.create_token(session, "service", "metrics-test")
    engine.dispose()
    deadline = time.monotonic() + 10
    while True:  # a child's figures are written as it counts; the last may lag a little
        response = httpx.get(f"http://127.0.0.1:{proc.api_port}/metrics",
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)  # fmt: skip
        assert response.status_code == 200
        text = response.text
        if metric(text, "mailgw_messages_processed_total") >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert metric(text, "mailgw_messages_processed_total") >= 2
    assert metric(text, "mailgw_processing_seconds_count") >= 2
    assert metric(text, 'mailgw_stage_seconds_count{stage="rules"}') >= 2
    assert metric(text, 'mailgw_messages_accepted_total{origin="smtp"}') >= 2  # the gateway's
    assert text.count("# TYPE mailgw_messages_processed_total") <= 1  # one family per name
