"""The `mailgw` command: configuration checks, database, queue, tokens and users."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from mailgw import accounts
from mailgw.cli import main
from mailgw.db.engine import make_engine, make_sessionmaker
from mailgw.db.migrate import alembic_config, is_up_to_date
from mailgw.db.models import HELD, QUEUED, Message
from mailgw.spool import Incoming, Spool
from tests.conftest import PG_URL


@pytest.fixture
def cfg_file(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "mailgw.toml"
    path.write_text(
        f'[storage]\ndata_dir = "data"\ndatabase_url = "{database_url}"\n'
        '[smtp]\nlisten = "127.0.0.1:0"\n[api]\nlisten = ""\n'
    )
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_config_reports_key_and_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[storage]\ndata_dir = "x"\n\n[smtp]\nlisten = "nowhere"\nmax_recipients = "ten"\n'
        'colour = 1\n[relay]\nstarttls = "maybe"\n'
    )
    code, _, err = run(capsys, "check-config", "-c", str(bad))
    assert code == 2
    assert f"{bad}:5: smtp.listen: expected 'host:port'" in err
    assert f"{bad}:6: smtp.max_recipients: expected an integer" in err
    assert f"{bad}:7: smtp.colour: unknown key" in err
    assert f"{bad}:9: relay.starttls: expected one of opportunistic, required, none" in err


def test_check_config_syntax_error_and_missing_file(tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[smtp\nlisten = 1\n")
    code, _, err = run(capsys, "check-config", "-c", str(broken))
    assert code == 2 and "line 1" in err
    code, _, err = run(capsys, "check-config", "-c", str(tmp_path / "absent.toml"))
    assert code == 2 and "cannot read" in err


def test_example_config_is_valid(capsys) -> None:
    example = Path(__file__).resolve().parents[1] / "config.example.toml"
    code, out, _ = run(capsys, "check-config", "-c", str(example))
    assert code == 0 and "OK" in out


def test_db_upgrade_and_postgresql_never_migrated_silently(
    cfg_file: Path, database_url: str, capsys
) -> None:
    engine = make_engine(database_url)
    from alembic import command

    command.downgrade(alembic_config(engine), "base")
    assert not is_up_to_date(engine)
    if PG_URL:
        # The gateway refuses to run on an old PostgreSQL schema rather than migrate it.
        code, _, err = run(capsys, "queue", "list", "-c", str(cfg_file))
        assert code == 1 and "mailgw db upgrade" in err
    code, out, _ = run(capsys, "db", "upgrade", "-c", str(cfg_file))
    assert code == 0 and "database at" in out
    assert is_up_to_date(engine)
    engine.dispose()


def test_token_create_prints_only_the_token(cfg_file: Path, database_url: str, capsys) -> None:
    code, out, _ = run(capsys, "token", "create", "--role", "auditor", "--name", "kiểm toán",
                       "-c", str(cfg_file))  # fmt: skip
    assert code == 0
    token = out.strip()
    assert "\n" not in token and token.startswith("mgw_")
    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as session:
        row = accounts.find_token(session, token)
        assert row is not None and row.role == "auditor" and row.name == "kiểm toán"
        assert row.token_hash != token and token not in row.token_hash
    engine.dispose()
    with pytest.raises(SystemExit) as info:
        main(["token", "create", "--role", "root", "-c", str(cfg_file)])
    assert info.value.code == 2


def test_user_commands(cfg_file: Path, database_url: str, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("mật-khẩu-1\n"))
    assert run(capsys, "user", "add", "clerk", "--password-stdin", "-c", str(cfg_file))[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("x\n"))
    code, _, err = run(capsys, "user", "add", "clerk", "--password-stdin", "-c", str(cfg_file))
    assert code == 1 and "exists already" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("mật-khẩu-2\n"))
    assert run(capsys, "user", "passwd", "clerk", "--password-stdin", "-c", str(cfg_file))[0] == 0
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        assert accounts.check_credentials(session, "clerk", "mật-khẩu-2")
        assert not accounts.check_credentials(session, "clerk", "mật-khẩu-1")
    assert run(capsys, "user", "disable", "clerk", "-c", str(cfg_file))[0] == 0
    with sessions() as session:
        assert not accounts.check_credentials(session, "clerk", "mật-khẩu-2")
    engine.dispose()


async def spool_one(data_dir: Path, database_url: str, state: str = HELD) -> str:
    engine = make_engine(database_url)
    spool = Spool(data_dir, make_sessionmaker(engine))
    msg = Incoming(raw=b"Subject: x\r\n\r\nbody\r\n", mail_from="a@example.gov.vn",
                   rcpt_to=["b@example.gov.vn"], initial_state=state)  # fmt: skip
    queue_id = await spool.accept(msg)
    engine.dispose()
    return queue_id


async def test_queue_list_show_retry_delete(cfg_file: Path, database_url: str, capsys) -> None:
    assert main(["db", "upgrade", "-c", str(cfg_file)]) == 0
    held = await spool_one(cfg_file.parent / "data", database_url)
    other = await spool_one(cfg_file.parent / "data", database_url)
    capsys.readouterr()
    code, out, _ = run(capsys, "queue", "list", "-c", str(cfg_file))
    assert code == 0 and held in out and other in out and "held" in out
    code, out, _ = run(capsys, "queue", "show", held.lower(), "-c", str(cfg_file))
    shown = json.loads(out)
    assert shown["queue_id"] == held and shown["rcpt_to"] == ["b@example.gov.vn"]
    assert run(capsys, "queue", "retry", held, "-c", str(cfg_file))[0] == 0
    assert run(capsys, "queue", "delete", other, "-c", str(cfg_file))[0] == 0
    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as session:
        states = dict(session.execute(select(Message.queue_id, Message.state)).all())
    engine.dispose()
    assert states == {held: QUEUED, other: "deleted"}
    code, out, _ = run(capsys, "queue", "list", "-c", str(cfg_file))
    assert other not in out
    with pytest.raises(SystemExit):
        main(["queue", "show", "NOSUCHID", "-c", str(cfg_file)])
