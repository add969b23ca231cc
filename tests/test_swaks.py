"""swaks (Debian package) as a real SMTP client against `mailgw serve`: relay listener,
submission with STARTTLS + AUTH PLAIN/LOGIN, refusals (no TLS, open relay, oversize)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailgw.db.engine import make_engine
from mailgw.db.models import Message
from tests.conftest import free_port, need_binary
from tests.gateway_process import GatewayProcess, write_config
from tests.smtp_server import DownstreamSMTP, TLSFiles, make_self_signed_cert

USER, PASSWORD = "vanthu", "Mật-khẩu 15/CT-TTg"
SENDER = "vanthu@example.gov.vn"
EXTERNAL = "doitac@partner.example.com"

MESSAGE = (
    "From: =?utf-8?Q?V=C4=83n_th=C6=B0?= <vanthu@example.gov.vn>\r\n"
    "To: lanhdao@example.gov.vn\r\n"
    "Subject: =?utf-8?Q?Gi=E1=BA=A5y_m=E1=BB=9Di_h=E1=BB=8Dp?=\r\n"
    "Date: Mon, 02 Mar 2026 08:00:00 +0700\r\n"
    "Message-ID: <swaks-1@example.gov.vn>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Kính gửi: Lãnh đạo Sở.\r\n"
    ".Dòng bắt đầu bằng dấu chấm\r\n"
    "\r\n"
    "Trân trọng.\r\n"
).encode()


@pytest.fixture(scope="module")
def swaks_bin() -> str:
    return need_binary("swaks")


@pytest.fixture
def downstream() -> Iterator[DownstreamSMTP]:
    with DownstreamSMTP() as srv:
        yield srv


class Gateway:
    def __init__(self, proc: GatewayProcess, relay_port: int, submission_port: int, url: str):
        self.proc = proc
        self.relay_port = relay_port
        self.submission_port = submission_port
        self.database_url = url

    def rows(self) -> list:
        engine = make_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(select(Message.__table__)).fetchall())
        finally:
            engine.dispose()


@pytest.fixture
def gateway(
    tmp_path: Path, database_url: str, downstream: DownstreamSMTP, swaks_bin: str
) -> Iterator[Callable[..., Gateway]]:
    """``gateway(**smtp_overrides)``: `mailgw serve` with a relay and a submission listener
    (self-signed certificate), relaying to ``downstream``; the user vanthu exists."""
    procs: list[GatewayProcess] = []
    tls: TLSFiles = make_self_signed_cert(tmp_path / "tls", "mailgw.test")

    def start(**smtp: object) -> Gateway:
        config = tmp_path / "mailgw.toml"
        submission = free_port()
        ports = write_config(
            config, tmp_path / "data", database_url,
            smtp={"submission_listen": f"127.0.0.1:{submission}", "tls_cert": str(tls.cert),
                  "tls_key": str(tls.key), **smtp},
            relay={"host": downstream.host, "port": downstream.port, "starttls": "none"},
        )  # fmt: skip
        added = subprocess.run(
            [sys.executable, "-m", "mailgw.cli", "user", "add", USER, "--password-stdin",
             "-c", str(config)],
            input=f"{PASSWORD}\n".encode(), capture_output=True, timeout=60,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr.decode()
        proc = GatewayProcess(config, ports["smtp"], tmp_path / "mailgw.log")
        procs.append(proc)
        proc.start(also=(submission,))
        return Gateway(proc, ports["smtp"], submission, database_url)

    yield start
    for proc in procs:  # SIGTERM is tested in test_crash_recovery.py; here: no waiting
        proc.stop()


def swaks(swaks_bin: str, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """Run swaks against 127.0.0.1:port; its transcript is in stdout+stderr."""
    result = subprocess.run(
        [swaks_bin, "--server", "127.0.0.1", "--port", str(port), "--helo", "client.test",
         "--timeout", "15", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    result.stdout += result.stderr
    return result


def queue_id(transcript: str) -> str:
    found = re.findall(r"<[~-]  250 2\.0\.0 OK: queued as (\w+)", transcript)
    assert len(found) == 1, transcript
    return found[0]


def ehlo_keywords(transcript: str, marker: str = "<-") -> list[str]:
    """The EHLO keywords swaks saw (``<-`` in clear, ``<~`` over TLS), last EHLO only."""
    blocks = re.findall(rf"(?:^{marker}  250-.*\n)+^{marker}  250 .*\n", transcript, re.M)
    assert blocks, transcript
    return [line[8:].strip() for line in blocks[-1].splitlines()[1:]]


def test_relay_listener_delivers(
    gateway, downstream: DownstreamSMTP, swaks_bin: str, tmp_path: Path
) -> None:
    gw = gateway()
    eml = tmp_path / "letter.eml"
    eml.write_bytes(MESSAGE[:-2])  # swaks ends DATA with its own CRLF
    rcpts = ["lanhdao@example.gov.vn", "pho@example.gov.vn", EXTERNAL]  # trusted: 127/8
    out = swaks(swaks_bin, gw.relay_port, "--from", SENDER, "--to", ",".join(rcpts),
                "--data", f"@{eml}")  # fmt: skip
    assert out.returncode == 0, out.stdout
    qid = queue_id(out.stdout)
    assert "AUTH" not in "".join(ehlo_keywords(out.stdout))  # no AUTH on the relay listener
    [got] = downstream.wait_for_messages(1, timeout=15)
    assert got.mail_from == SENDER
    assert sorted(got.rcpts) == sorted(rcpts)
    assert got.data.endswith(MESSAGE), got.data[:600]  # swaks' dot-stuffing undone exactly
    added = got.data[: -len(MESSAGE)]
    assert added.startswith(b"Received: from client.test ([127.0.0.1])")
    assert b"by mailgw.test" in added and b" with ESMTP id " in added
    assert f"X-Mailgw-Queue-Id: {qid}\r\n".encode() in added
    [row] = gw.rows()
    assert row.queue_id == qid and row.listener == "relay" and row.auth_user is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_submission_starttls_and_auth(
    gateway, downstream: DownstreamSMTP, swaks_bin: str, mechanism: str
) -> None:
    gw = gateway(trusted_networks=[])  # only AUTH allows relaying to an outside domain
    common = ("--tls", "--auth", mechanism, "--auth-user", USER, "--from", SENDER,
              "--to", EXTERNAL, "--header", f"Subject: AUTH {mechanism}")  # fmt: skip

    bad = swaks(swaks_bin, gw.submission_port, *common, "--auth-password", "wrong")
    assert bad.returncode == 28, bad.stdout  # error in AUTH transaction
    assert re.search(r"^<~\* 535 5\.7\.8 ", bad.stdout, re.M), bad.stdout

    out = swaks(swaks_bin, gw.submission_port, *common, "--auth-password", PASSWORD)
    assert out.returncode == 0, out.stdout
    assert "<-  220 Ready to start TLS" in out.stdout
    assert "=== TLS started with cipher TLSv1." in out.stdout
    assert "STARTTLS" in ehlo_keywords(out.stdout, "<-")
    assert "AUTH" not in " ".join(ehlo_keywords(out.stdout, "<-"))  # not before TLS
    assert f"~> AUTH {mechanism}" in out.stdout
    assert "<~  235 2.7.0 Authentication successful" in out.stdout
    qid = queue_id(out.stdout)

    [got] = downstream.wait_for_messages(1, timeout=15)
    assert got.rcpts == [EXTERNAL] and got.mail_from == SENDER
    assert f"Subject: AUTH {mechanism}\r\n".encode() in got.data
    assert b" with ESMTPSA id " + qid.encode() in got.data
    assert f"X-Mailgw-Queue-Id: {qid}\r\n".encode() in got.data
    [row] = gw.rows()
    assert row.queue_id == qid
    assert row.listener == "submission" and row.auth_user == USER


def test_auth_without_tls_is_refused(gateway, downstream: DownstreamSMTP, swaks_bin: str) -> None:
    gw = gateway()
    args = ("--auth-user", USER, "--auth-password", PASSWORD, "--from", SENDER,
            "--to", "lanhdao@example.gov.vn")  # fmt: skip

    # AUTH is not even offered in clear text, so swaks cannot authenticate
    out = swaks(swaks_bin, gw.submission_port, "--auth", "PLAIN", *args)
    assert out.returncode == 28, out.stdout
    assert "Host did not advertise authentication" in out.stdout
    keywords = ehlo_keywords(out.stdout)
    assert "STARTTLS" in keywords and not any(k.startswith("AUTH") for k in keywords)
    assert "-> AUTH" not in out.stdout

    # a client that carries on without AUTH is stopped before MAIL: STARTTLS first
    out = swaks(swaks_bin, gw.submission_port, "--auth-optional", "LOGIN", *args)
    assert out.returncode == 23, out.stdout  # error in MAIL transaction
    assert re.search(r"^<\*\* 530 .*STARTTLS", out.stdout, re.M), out.stdout

    # and over TLS without AUTH the submission listener wants a login
    out = swaks(swaks_bin, gw.submission_port, "--tls", "--from", SENDER,
                "--to", "lanhdao@example.gov.vn")  # fmt: skip
    assert out.returncode == 23, out.stdout
    assert re.search(r"^<~\* 530 5\.7\.0 Authentication required", out.stdout, re.M), out.stdout

    assert gw.rows() == []
    assert downstream.messages == []


def test_open_relay_attempt_is_refused(gateway, downstream: DownstreamSMTP, swaks_bin: str) -> None:
    gw = gateway(trusted_networks=[])
    out = swaks(swaks_bin, gw.relay_port, "--from", SENDER, "--to", EXTERNAL)
    assert out.returncode == 24, out.stdout  # no RCPTs accepted
    assert re.search(r"^<\*\* 550 5\.7\.1 Relaying denied", out.stdout, re.M), out.stdout
    assert "-> DATA" not in out.stdout

    # a forged local sender does not help either, and only the outside recipient is refused
    out = swaks(swaks_bin, gw.relay_port, "--from", "spammer@partner.example.com",
                "--to", f"{EXTERNAL},lanhdao@example.gov.vn")  # fmt: skip
    assert out.returncode == 0, out.stdout
    assert re.search(r"^<\*\* 550 5\.7\.1 ", out.stdout, re.M), out.stdout
    qid = queue_id(out.stdout)
    [got] = downstream.wait_for_messages(1, timeout=15)
    assert got.rcpts == ["lanhdao@example.gov.vn"]
    assert f"X-Mailgw-Queue-Id: {qid}\r\n".encode() in got.data
    [row] = gw.rows()
    assert row.rcpt_to == ["lanhdao@example.gov.vn"]


def test_oversize_message_is_refused(
    gateway, downstream: DownstreamSMTP, swaks_bin: str, tmp_path: Path
) -> None:
    gw = gateway(max_message_size=10000)
    eml = tmp_path / "big.eml"
    eml.write_bytes(MESSAGE + "Nội dung rất dài của công văn.\r\n".encode() * 400)
    out = swaks(swaks_bin, gw.relay_port, "--from", SENDER, "--to", "lanhdao@example.gov.vn",
                "--data", f"@{eml}", "--suppress-data")  # fmt: skip
    assert "SIZE 10000" in ehlo_keywords(out.stdout)
    assert out.returncode == 26, out.stdout  # server did not accept mail following data
    assert re.search(r"^<\*\* 552 5\.3\.4 ", out.stdout, re.M), out.stdout

    # a message within the limit still goes through
    small = tmp_path / "small.eml"
    small.write_bytes(MESSAGE[:-2])
    out = swaks(swaks_bin, gw.relay_port, "--from", SENDER, "--to", "lanhdao@example.gov.vn",
                "--data", f"@{small}")  # fmt: skip
    assert out.returncode == 0, out.stdout
    [got] = downstream.wait_for_messages(1, timeout=15)
    assert got.data.endswith(MESSAGE)
    assert len(gw.rows()) == 1


def test_ehlo_advertises_only_real_auth_mechanisms(gateway, swaks_bin: str) -> None:
    gw = gateway()
    out = swaks(swaks_bin, gw.submission_port, "--tls", "--quit-after", "HELO")
    assert out.returncode == 0, out.stdout
    assert "AUTH LOGIN PLAIN" in ehlo_keywords(out.stdout, "<~")
