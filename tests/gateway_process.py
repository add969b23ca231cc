"""Run `mailgw serve` as a real subprocess (for crash, signal and CLI tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port


def write_config(path: Path, data_dir: Path, database_url: str, **sections: dict) -> dict:
    """Write a TOML config with fresh loopback ports; returns the ports used."""
    ports = {"smtp": free_port(), "api": free_port()}
    values: dict[str, dict] = {
        "storage": {"data_dir": str(data_dir), "database_url": database_url},
        "smtp": {"listen": f"127.0.0.1:{ports['smtp']}", "hostname": "mailgw.test",
                 "domains": ["example.gov.vn"], "max_connections_per_client": 200},
        "api": {"listen": f"127.0.0.1:{ports['api']}"},
        "pipeline": {"poll_seconds": 0.05, "lease_seconds": 5},
        "relay": {"retry_initial_seconds": 0.2, "retry_max_seconds": 1.0, "timeout": 10},
        "log": {"level": "INFO"},
    }  # fmt: skip
    for name, extra in sections.items():
        values.setdefault(name, {}).update(extra)
    lines = []
    for name, table in values.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            lines.append(f"{key} = {_toml(value)}")
    path.write_text("\n".join(lines) + "\n")
    return ports


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def smtp_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(100).startswith(b"220")
    except OSError:
        return False


class GatewayProcess:
    def __init__(self, config_path: Path, smtp_port: int, log_path: Path):
        self.config_path = config_path
        self.smtp_port = smtp_port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0, also: tuple[int, ...] = ()) -> GatewayProcess:
        """Start `mailgw serve`; return once the SMTP port, and each port of ``also`` (other
        SMTP listeners, opened one after the other), greets."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailgw.cli", "serve", "-c", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mailgw exited with {self.proc.returncode}:\n{self.log()}")
            if all(smtp_ready(port) for port in (self.smtp_port, *also)):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"mailgw did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
