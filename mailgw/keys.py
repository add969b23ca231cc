"""The gateway's OpenPGP keyring: a GnuPG home under the data directory, and how gpg is run.

``Keyring`` owns ``data_dir/gnupg`` (mode 0700). Key management (import, list, remove) goes
through python-gnupg; every gpg process, ours or python-gnupg's, is killed after ``timeout``
seconds, so a hung gpg cannot hang a pipeline worker or a CLI command.

Signature verification (``mailgw.signing``) runs gpg through :meth:`Keyring.run`, which reads
gpg's machine-readable status lines from a pipe of their own (``--status-fd 3``). python-gnupg
reads them from stderr, mixed with gpg's human-readable log, where gpg echoes file names and
user ids; a crafted name could then look like a status line (the SigSpoof attacks). With a
separate pipe only gpg itself can write status lines. Data goes to gpg on stdin or in a private
temporary directory under names we choose; nothing from a message is ever passed as an argument.

Trust: the keyring uses GnuPG's ``direct`` trust model: a key's validity is exactly the owner
trust an administrator gave it (``mailgw keys import --trust``, ``mailgw keys trust``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gnupg

DEFAULT_TIMEOUT = 30.0
GNUPG_DIRNAME = "gnupg"

# Owner trust as mailgw names it (the ``trust`` key of the signature facts) and gpg's numbers
# for --import-ownertrust.
TRUST_LEVELS = ("unknown", "never", "marginal", "full", "ultimate")
_OWNERTRUST = {"unknown": 2, "never": 3, "marginal": 4, "full": 5, "ultimate": 6}
# gpg's TRUST_* status keywords to the names above
STATUS_TRUST = {
    "TRUST_UNDEFINED": "unknown",
    "TRUST_EXPIRED": "unknown",
    "TRUST_NEVER": "never",
    "TRUST_MARGINAL": "marginal",
    "TRUST_FULLY": "full",
    "TRUST_ULTIMATE": "ultimate",
}
# --list-keys --with-colons owner trust (field 9) to the names above
_COLON_TRUST = {"-": "unknown", "q": "unknown", "n": "never", "m": "marginal", "f": "full",
                "u": "ultimate"}  # fmt: skip

# Options for every gpg run: no network, no agent or dirmngr started, no gpg.conf read.
_BASE_OPTIONS = [
    "--no-options",
    "--trust-model",
    "direct",
    "--no-auto-key-retrieve",
    "--no-autostart",
    "--no-auto-check-trustdb",
    "--display-charset",
    "utf-8",
]


class KeyringError(Exception):
    """A key operation failed; the message says why."""


class GpgTimeout(KeyringError):
    """gpg did not finish within the timeout and was killed."""


@dataclass
class GpgRun:
    """One finished gpg process: exit code, status lines (keyword, rest), stdout, stderr."""

    returncode: int
    status: list[tuple[str, str]]
    stdout: bytes
    stderr: bytes


@dataclass
class KeyInfo:
    """A public key in the gateway keyring."""

    fingerprint: str
    uids: list[str]
    created: int | None = None  # seconds since the epoch
    expires: int | None = None
    revoked: bool = False
    expired: bool = False
    trust: str = "unknown"
    subkeys: list[str] = field(default_factory=list)  # subkey fingerprints

    @property
    def uid(self) -> str | None:
        """The primary user id (gpg lists it first)."""
        return self.uids[0] if self.uids else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "uids": self.uids,
            "created": self.created,
            "expires": self.expires,
            "revoked": self.revoked,
            "expired": self.expired,
            "trust": self.trust,
            "subkeys": self.subkeys,
        }


def normalise_fingerprint(value: str) -> str:
    fpr = "".join(value.split()).upper()
    if fpr.startswith("0X"):
        fpr = fpr[2:]
    if len(fpr) not in (40, 64) or any(c not in "0123456789ABCDEF" for c in fpr):
        raise KeyringError(f"not a full key fingerprint: {value!r}")
    return fpr


def _kill(proc: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


class _TimedGPG(gnupg.GPG):
    """python-gnupg with a hard timeout on every gpg process it runs."""

    timeout: float = DEFAULT_TIMEOUT

    def _open_subprocess(self, args: Any, passphrase: Any = False) -> Any:
        # same as python-gnupg's, in a session of its own so that a kill takes its children too
        cmd = self.make_args(args, passphrase)
        return subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )

    def _collect_output(self, process: Any, result: Any, writer: Any = None, stdin: Any = None):
        fired = threading.Event()

        def expire() -> None:
            fired.set()
            _kill(process)

        timer = threading.Timer(self.timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            rc = super()._collect_output(process, result, writer, stdin)
        finally:
            timer.cancel()
        if fired.is_set():
            raise GpgTimeout(f"gpg did not finish within {self.timeout:g} s")
        return rc


class Keyring:
    """The GnuPG home the gateway manages, and the one way mailgw runs gpg on it."""

    def __init__(
        self, home: Path | str, *, gpg_binary: str = "gpg", timeout: float = DEFAULT_TIMEOUT
    ):
        self.home = Path(home)
        self.gpg_binary = gpg_binary
        self.timeout = timeout
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        self._gnupg: _TimedGPG | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_data_dir(cls, data_dir: Path | str, **kwargs: Any) -> Keyring:
        """The keyring of a gateway: ``data_dir/gnupg``."""
        return cls(Path(data_dir) / GNUPG_DIRNAME, **kwargs)

    # --- running gpg

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        env["GNUPGHOME"] = str(self.home)
        env.setdefault("PATH", "/usr/bin:/bin")
        return env

    @property
    def gnupg(self) -> gnupg.GPG:
        """A python-gnupg handle on this keyring (every call has the timeout)."""
        with self._lock:
            if self._gnupg is None:
                timed = type("TimedGPG", (_TimedGPG,), {"timeout": self.timeout})
                g = timed(
                    gpgbinary=self.gpg_binary,
                    gnupghome=str(self.home),
                    options=list(_BASE_OPTIONS),
                    env=self._env(),
                )
                g.encoding = "utf-8"
                self._gnupg = g
            return self._gnupg

    def run(
        self,
        args: list[str],
        stdin: bytes = b"",
        *,
        files: dict[str, bytes] | None = None,
        timeout: float | None = None,
    ) -> GpgRun:
        """Run gpg with ``args``; status lines come from fd 3, never from stdout or stderr.

        ``files`` are written to a private temporary directory under the given names (choose
        plain fixed names); ``{name}`` in ``args`` is replaced by that file's path.
        """
        timeout = self.timeout if timeout is None else timeout
        with tempfile.TemporaryDirectory(prefix="mailgw-gpg-") as tmp:
            paths = {}
            for name, data in (files or {}).items():
                if "/" in name or name.startswith(".") or not name:
                    raise ValueError(f"unsafe temporary file name {name!r}")
                path = os.path.join(tmp, name)
                with open(path, "wb") as f:
                    f.write(data)
                paths[name] = path
            argv = [a.format(**paths) if "{" in a else a for a in args]
            return self._run(argv, stdin, timeout)

    def _run(self, args: list[str], stdin: bytes, timeout: float) -> GpgRun:
        status_r, status_w = os.pipe()
        cmd = [
            self.gpg_binary, "--homedir", str(self.home), "--batch", "--no-tty",
            "--status-fd", str(status_w), "--with-colons", "--fixed-list-mode",
            *_BASE_OPTIONS, *args,
        ]  # fmt: skip
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(status_w,),
                env=self._env(),
                start_new_session=True,
            )
        except OSError as exc:
            os.close(status_r)
            os.close(status_w)
            raise KeyringError(f"cannot run {self.gpg_binary}: {exc}") from exc
        os.close(status_w)
        chunks: list[bytes] = []

        def read_status() -> None:
            with os.fdopen(status_r, "rb") as f:
                while block := f.read(65536):
                    chunks.append(block)

        reader = threading.Thread(target=read_status, daemon=True)
        reader.start()
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.communicate()
            reader.join(1.0)
            raise GpgTimeout(f"gpg did not finish within {timeout:g} s") from None
        except BaseException:
            _kill(proc)
            proc.wait()
            raise
        reader.join(timeout)
        return GpgRun(proc.returncode, parse_status(b"".join(chunks)), out, err)

    def close(self) -> None:
        """Stop any gpg-agent or dirmngr gpg started for this home."""
        try:
            subprocess.run(
                ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
                capture_output=True,
                timeout=10,
                env=self._env(),
            )
        except (OSError, subprocess.SubprocessError):
            pass

    # --- keys

    def import_keys(self, data: bytes, trust: str | None = "full") -> list[str]:
        """Import public keys (armored or binary); return the fingerprints imported.

        Secret keys are refused. ``trust`` sets the owner trust of every key imported (None
        leaves it as it is). A revocation certificate for a key in the keyring is imported too.
        """
        if trust is not None and trust not in TRUST_LEVELS:
            raise KeyringError(f"unknown trust level {trust!r}; one of {', '.join(TRUST_LEVELS)}")
        shown = self.run(["--show-keys", "{keys}"], files={"keys": data})
        records = [line.split(":") for line in shown.stdout.decode("utf-8", "replace").split("\n")]
        if any(r[0] in ("sec", "ssb") for r in records):
            raise KeyringError("the file holds a secret key: import public keys only")
        result = self.gnupg.import_keys(data)
        fingerprints = []
        for item in result.results:
            fpr = item.get("fingerprint")
            if fpr and fpr not in fingerprints:
                fingerprints.append(fpr)
        if not fingerprints and not int(result.count or 0):
            problems = "; ".join(str(r.get("problem") or r.get("text")) for r in result.results)
            raise KeyringError(f"no key imported: {problems or 'no OpenPGP key found'}")
        if trust is not None:
            for fpr in fingerprints:
                self.set_trust(fpr, trust)
        return fingerprints

    def set_trust(self, fingerprint: str, level: str) -> None:
        if level not in TRUST_LEVELS:
            raise KeyringError(f"unknown trust level {level!r}; one of {', '.join(TRUST_LEVELS)}")
        fpr = normalise_fingerprint(fingerprint)
        if self.get_key(fpr) is None:
            raise KeyringError(f"no key {fpr} in the keyring")
        line = f"{fpr}:{_OWNERTRUST[level]}:\n".encode()
        run = self.run(["--import-ownertrust"], line)
        if run.returncode != 0:
            raise KeyringError(f"cannot set trust: {run.stderr.decode('utf-8', 'replace')}")

    def list_keys(self, fingerprint: str | None = None) -> list[KeyInfo]:
        """Public keys, or the one key with this (primary or subkey) fingerprint."""
        if fingerprint is not None:
            fingerprint = normalise_fingerprint(fingerprint)
            run = self.run(["--list-keys", "--", fingerprint])
            if run.returncode != 0:
                return []
            return [k for k in parse_key_listing(run.stdout)]
        run = self.run(["--list-keys"])
        return parse_key_listing(run.stdout)

    def get_key(self, fingerprint: str) -> KeyInfo | None:
        """The key whose primary key or a subkey has exactly this fingerprint."""
        fpr = normalise_fingerprint(fingerprint)
        for key in self.list_keys(fpr):
            if key.fingerprint == fpr or fpr in key.subkeys:
                return key
        return None

    def find_by_keyid(self, keyid: str) -> KeyInfo | None:
        """The key with this long key id (last 16 hex digits of a fingerprint), if any."""
        kid = keyid.upper()
        if len(kid) != 16 or any(c not in "0123456789ABCDEF" for c in kid):
            return None
        for key in self.list_keys():
            if any(f.endswith(kid) for f in [key.fingerprint, *key.subkeys]):
                return key
        return None

    def remove(self, fingerprint: str) -> None:
        fpr = normalise_fingerprint(fingerprint)
        key = self.get_key(fpr)
        if key is None or key.fingerprint != fpr:
            raise KeyringError(f"no key {fpr} in the keyring (give the primary fingerprint)")
        result = self.gnupg.delete_keys(fpr)
        if str(result) != "ok":
            raise KeyringError(f"cannot remove {fpr}: {result}")


def parse_status(data: bytes) -> list[tuple[str, str]]:
    """gpg status lines (from the status fd) as (keyword, rest) pairs."""
    out = []
    for raw in data.split(b"\n"):
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if not line.startswith("[GNUPG:] "):
            continue
        keyword, _, rest = line[9:].partition(" ")
        out.append((keyword, rest))
    return out


def _unescape_colon_field(value: str) -> str:
    # --with-colons escapes ":" and control characters as \xNN
    out = bytearray()
    i = 0
    raw = value.encode("utf-8", "surrogateescape")
    while i < len(raw):
        if raw[i : i + 2] == b"\\x" and i + 4 <= len(raw):
            try:
                out.append(int(raw[i + 2 : i + 4], 16))
                i += 4
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return out.decode("utf-8", "replace")


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def parse_key_listing(data: bytes) -> list[KeyInfo]:
    """``gpg --list-keys --with-colons`` output to :class:`KeyInfo` values."""
    keys: list[KeyInfo] = []
    current: KeyInfo | None = None
    last = ""
    for line in data.decode("utf-8", "replace").split("\n"):
        f = line.rstrip("\r").split(":")
        kind = f[0]
        if kind == "pub":
            current = KeyInfo(
                fingerprint="",
                uids=[],
                created=_int(f[5]) if len(f) > 5 else None,
                expires=_int(f[6]) if len(f) > 6 else None,
                revoked=f[1] == "r",
                expired=f[1] == "e",
                trust=_COLON_TRUST.get(f[8], "unknown") if len(f) > 8 else "unknown",
            )
            keys.append(current)
        elif kind == "fpr" and current is not None and len(f) > 9:
            if last == "pub":
                current.fingerprint = f[9]
            elif last == "sub":
                current.subkeys.append(f[9])
        elif kind == "uid" and current is not None and len(f) > 9 and f[1] != "r":
            current.uids.append(_unescape_colon_field(f[9]))
        if kind in ("pub", "sub", "uid"):
            last = kind
    return [k for k in keys if k.fingerprint]
