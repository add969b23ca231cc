"""`mailgw serve` with no configuration: everything on 127.0.0.1 with the embedded defaults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.gateway_process import smtp_ready
from tests.smtp_client import send_message


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: a
        try:  # connection in TIME_WAIT does not take the port, a listener does
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_serve_runs_on_embedded_defaults(tmp_path: Path) -> None:
    if not (port_free(2525) and port_free(8025)):
        pytest.skip("the default ports 2525/8025 are taken on this machine")
    env = {k: v for k, v in os.environ.items() if k != "MAILGW_DATABASE_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailgw.cli", "serve"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not smtp_ready(2525):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "no SMTP listener on 127.0.0.1:2525"
            time.sleep(0.1)
        code, _ = send_message("127.0.0.1", 2525, "a@localhost", ["b@localhost"],
                               b"Subject: hi\r\n\r\nbody\r\n")  # fmt: skip
        assert code == 250
        with urllib.request.urlopen("http://127.0.0.1:8025/health", timeout=10) as response:
            assert json.load(response)["status"] == "ok"
        data = tmp_path / "mailgw-data"
        assert (data / "mailgw.db").is_file()
        assert len(list((data / "spool").rglob("*.eml"))) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    log = proc.stdout.read().decode() if proc.stdout else ""
    assert "INFO mailgw.app: shutting down" in log  # the gateway's own INFO lines are kept
    assert "event loop uvloop" in log  # [runtime] event_loop = "auto" with uvloop installed
    assert ">> b'" not in log and "mail.log" not in log  # not the SMTP transcript
