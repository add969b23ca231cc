"""A raw SMTP client for tests that must send exactly the bytes they choose (smuggling,
bare line endings, pipelining) and read every reply."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl


class RawSMTP:
    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        """Read one (possibly multi-line) reply."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("connection closed")
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                break
        return int(lines[-1][:3]), "\n".join(lines)

    def cmd(self, line: str) -> tuple[int, str]:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def send_message(
    host: str,
    port: int,
    mail_from: str,
    rcpts: list[str],
    data: bytes,
    *,
    starttls: bool = False,
    login: tuple[str, str] | None = None,
) -> tuple[int, str]:
    """Send one message with smtplib; return the reply to DATA. Raises on refusal."""
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo("client.test")
        if starttls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            client.starttls(context=ctx)
            client.ehlo("client.test")
        if login:
            client.login(*login)
        code, msg = client.mail(mail_from)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, msg, mail_from)
        for rcpt in rcpts:
            code, msg = client.rcpt(rcpt)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({rcpt: (code, msg)})
        code, msg = client.data(data)
        if code != 250:
            raise smtplib.SMTPDataError(code, msg)
        return code, msg.decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
