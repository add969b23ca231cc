"""A throwaway, private Postfix instance for integration tests (Debian's postfix package).

Everything the instance owns lives under one fresh folder in /tmp (config_directory,
queue_directory, data_directory, maillog); the system Postfix (/etc/postfix,
/var/spool/postfix) is only read (binaries, postfix-files). It listens only on
127.0.0.1:<port>, accepts mail from loopback clients for ``relay_domains`` and hands every
message to its content filter ``mailgw:[127.0.0.1]:<filter_port>`` — the way an agency's
existing MTA uses mailgw. Retries are fast (1-2 s) so tests can watch deferral and recovery.

Postfix daemons run as user ``postfix`` and chdir() into the queue folder: the base folder is
0755 (pytest's tmp_path folders are 0700, which the daemons cannot enter), the queue folder is
root's and ``postfix check`` creates its subfolders and the data folder with the right owners.
The processes of an instance are found by their working folder, so ``stop()`` can check that
none is left and end stragglers by PID.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
SENDMAIL = "/usr/sbin/sendmail"

MASTER_CF = """\
# service  type  private unpriv chroot wakeup maxproc command
{addr}:{port} inet n     -      n      -      -       smtpd
pickup     unix  n       -      n      60     1       pickup
cleanup    unix  n       -      n      -      0       cleanup
qmgr       unix  n       -      n      300    1       qmgr
rewrite    unix  -       -      n      -      -       trivial-rewrite
bounce     unix  -       -      n      -      0       bounce
defer      unix  -       -      n      -      0       bounce
trace      unix  -       -      n      -      0       bounce
verify     unix  -       -      n      -      1       verify
flush      unix  n       -      n      1000?  0       flush
proxymap   unix  -       -      n      -      -       proxymap
proxywrite unix  -       -      n      -      1       proxymap
showq      unix  n       -      n      -      -       showq
error      unix  -       -      n      -      -       error
retry      unix  -       -      n      -      -       error
discard    unix  -       -      n      -      -       discard
anvil      unix  -       -      n      -      1       anvil
scache     unix  -       -      n      -      1       scache
postlog    unix-dgram n  -      n      -      1       postlogd
# the content filter: Postfix's SMTP client talking to mailgw's relay listener
mailgw     unix  -       -      n      -      4       smtp
"""

MAIN_CF = """\
# throwaway test instance (tests/postfix_instance.py)
compatibility_level = 3.6
queue_directory = {qdir}
data_directory = {ddir}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {maillog}
maillog_file_prefixes = {base}
myhostname = postfix.test
mydomain = test
myorigin = $myhostname
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
inet_interfaces = {addr}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {relay_domains}
smtpd_peername_lookup = no
smtpd_client_restrictions = permit_mynetworks, reject
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_tls_security_level = none
# every message goes to mailgw; nothing else can leave this instance
content_filter = mailgw:[{addr}]:{filter_port}
default_transport = mailgw:[{addr}]:{filter_port}
relay_transport = mailgw:[{addr}]:{filter_port}
smtp_tls_security_level = none
smtp_dns_support_level = disabled
smtp_connect_timeout = 5s
# fast retries for tests
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""


class PostfixError(RuntimeError):
    pass


class PostfixInstance:
    def __init__(
        self,
        port: int,
        filter_port: int,
        relay_domains: str = "example.gov.vn",
        addr: str = "127.0.0.1",
    ):
        self.addr = addr
        self.port = port
        self.filter_port = filter_port
        self.relay_domains = relay_domains
        self.base = Path(tempfile.mkdtemp(prefix="mailgw-postfix-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.conf = self.base / "conf"
        self.qdir = self.base / "queue"
        self.ddir = self.base / "data"
        self.maillog = self.base / "maillog"
        self.started = False

    # --- lifecycle

    def _run(self, *args: str, timeout: float = 30.0, check: bool = True, **kw):
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
        if check and result.returncode != 0:
            raise PostfixError(
                f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
                f"\n--- maillog ---\n{self.log()[-3000:]}"
            )
        return result

    def start(self, timeout: float = 30.0) -> PostfixInstance:
        self.conf.mkdir(mode=0o755)
        self.qdir.mkdir(mode=0o755)
        os.chown(self.qdir, 0, 0)
        values = {
            "addr": self.addr,
            "port": self.port,
            "filter_port": self.filter_port,
            "relay_domains": self.relay_domains,
            "qdir": self.qdir,
            "ddir": self.ddir,
            "maillog": self.maillog,
            "base": self.base,
        }
        (self.conf / "main.cf").write_text(MAIN_CF.format(**values))
        (self.conf / "master.cf").write_text(MASTER_CF.format(**values))
        for name in ("main.cf", "master.cf"):
            os.chmod(self.conf / name, 0o644)
        self._run(POSTFIX, "-c", str(self.conf), "check")
        self.started = True
        self._run(POSTFIX, "-c", str(self.conf), "start")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with smtplib.SMTP(self.addr, self.port, timeout=2) as s:
                    s.noop()
                return self
            except (OSError, smtplib.SMTPException):
                time.sleep(0.1)
        raise PostfixError(f"postfix does not answer on {self.addr}:{self.port}:\n{self.log()}")

    def pids(self) -> list[int]:
        """Processes of this instance: Postfix daemons chdir() into queue_directory."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd == str(self.qdir) or cwd.startswith(f"{self.qdir}/"):
                found.append(int(entry.name))
        return found

    def stop(self, timeout: float = 15.0) -> list[int]:
        """Stop the instance; return the PIDs that had to be killed (should be none)."""
        if not self.started:
            return []
        self.started = False
        if (self.qdir / "pid" / "master.pid").exists():
            self._run(POSTFIX, "-c", str(self.conf), "stop", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pids():
                return []
            time.sleep(0.1)
        stragglers = self.pids()
        for pid in stragglers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return stragglers

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    # --- mail in

    def send(self, mail_from: str, rcpts: list[str], data: bytes) -> str:
        """Submit over SMTP; return Postfix's queue id from the reply to DATA."""
        with smtplib.SMTP(self.addr, self.port, timeout=10) as s:
            s.ehlo("client.test")
            code, reply = s.mail(mail_from)
            assert code == 250, (code, reply)
            for rcpt in rcpts:
                code, reply = s.rcpt(rcpt)
                assert code == 250, (rcpt, code, reply)
            code, reply = s.data(data)
            assert code == 250, (code, reply)
        match = re.search(r"queued as ([0-9A-Za-z]+)", reply.decode())
        assert match, reply
        return match.group(1)

    def sendmail(self, mail_from: str, rcpts: list[str], data: bytes) -> None:
        """Submit with Postfix's own sendmail(1) -C CONF (through postdrop and pickup)."""
        self._run(
            SENDMAIL, "-C", str(self.conf), "-f", mail_from, "-i", "--", *rcpts,
            input=data.decode("utf-8"),
        )  # fmt: skip

    # --- queue

    def flush(self) -> None:
        self._run(POSTQUEUE, "-c", str(self.conf), "-f")

    def queue_listing(self) -> str:
        return self._run(POSTQUEUE, "-c", str(self.conf), "-p").stdout

    def queue_empty(self) -> bool:
        return "Mail queue is empty" in self.queue_listing()

    def queue_files(self) -> int:
        count = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _root, _dirs, files in os.walk(self.qdir / sub):
                count += len(files)
        return count

    # --- log

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 15.0) -> list[re.Match]:
        """Wait until ``pattern`` matches ``count`` times in the maillog."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            found = list(rx.finditer(self.log()))
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{count} x /{pattern}/ not in the Postfix log within {timeout}s "
                    f"(found {len(found)}):\n{self.log()[-4000:]}"
                )
            time.sleep(0.1)

    def wait_queue_empty(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.queue_files():
            if time.monotonic() > deadline:
                raise AssertionError(f"Postfix queue not empty:\n{self.queue_listing()}")
            time.sleep(0.1)
