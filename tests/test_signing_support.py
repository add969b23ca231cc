"""Test support for the signature tests: keys generated with real gpg, signing, messages.

No tests here; test_signing.py and test_keys_cli.py use :class:`Signers`.
"""

from __future__ import annotations

import os
import subprocess
import urllib.parse
from pathlib import Path

ALICE_UID = "Văn thư Sở TTTT <vanthu@stttt.gov.vn>"
MALLORY_UID = "Mallory <mallory@example.net>"
OLD_UID = "Old Key <old@ubnd.gov.vn>"
BOB_UID = "Bob Revoked <bob@ubnd.gov.vn>"

# keys are created in the past so that one can have expired already and signatures can be made
# "back then" with --faked-system-time
_KEYS = {
    "alice": (ALICE_UID, None),
    "mallory": (MALLORY_UID, None),
    "old": (OLD_UID, "20200201T000000"),
    "bob": (BOB_UID, None),
}
PAST = "20200102T000000"


class Signers:
    """A GnuPG home holding the senders' secret keys (not the gateway's keyring)."""

    def __init__(self, gpg: str, home: Path):
        self.gpg = gpg
        self.home = home
        home.mkdir(mode=0o700)
        self.fpr: dict[str, str] = {}
        params = ""
        for uid, expire in _KEYS.values():
            name, _, mail = uid.partition(" <")
            params += (
                "%no-protection\nKey-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\n"
                f"Name-Real: {name}\nName-Email: {mail.rstrip('>')}\n"
                "Creation-Date: 20200101T000000\n"
                f"Expire-Date: {expire or 0}\n%commit\n"
            )
        self._gpg("--faked-system-time", "20200101T010000", "--gen-key", input=params.encode())
        listing = self._gpg("--with-colons", "--list-keys").stdout.decode()
        fprs = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
        self.fpr = dict(zip(_KEYS, fprs, strict=True))

    def _gpg(self, *args: str, input: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        proc = subprocess.run(
            [self.gpg, "--batch", "--no-tty", *args], input=input, capture_output=True, env=env
        )
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc

    def public_key(self, who: str) -> bytes:
        return self._gpg("--armor", "--export", self.fpr[who]).stdout

    def revocation(self, who: str) -> bytes:
        text = (self.home / "openpgp-revocs.d" / f"{self.fpr[who]}.rev").read_bytes()
        # gpg stores it with the armor line "escaped" by a leading colon
        return text.replace(b":-----BEGIN PGP PUBLIC KEY BLOCK", b"-----BEGIN PGP PUBLIC KEY BLOCK")

    def detach(self, who: str, data: bytes, *extra: str, armor: bool = True) -> bytes:
        args = ["--local-user", self.fpr[who], "--detach-sign", *extra]
        if armor:
            args.append("--armor")
        return self._gpg(*args, "--output", "-", input=data).stdout

    def clearsign(self, who: str, text: bytes, *extra: str) -> bytes:
        args = ["--local-user", self.fpr[who], "--clearsign", *extra, "--output", "-"]
        return self._gpg(*args, input=text).stdout

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"],
                       capture_output=True)  # fmt: skip


def pgp_mime(signed_part: bytes, signature: bytes, *, boundary: str = "sig-b0undary") -> bytes:
    """A multipart/signed message (CRLF) around ``signed_part`` (the exact signed bytes)."""
    return (
        b"From: =?utf-8?q?V=C4=83n_th=C6=B0?= <vanthu@stttt.gov.vn>\r\n"
        b"To: vanthu@ubnd.gov.vn\r\n"
        b"Subject: =?utf-8?q?Gi=E1=BA=A5y_m=E1=BB=9Di?=\r\n"
        b"Message-ID: <signed@stttt.gov.vn>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/signed; micalg=pgp-sha512;\r\n"
        b' protocol="application/pgp-signature"; boundary="' + boundary.encode() + b'"\r\n'
        b"\r\n"
        b"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n"
        b"--" + boundary.encode() + b"\r\n" + signed_part + b"\r\n"
        b"--" + boundary.encode() + b"\r\n"
        b'Content-Type: application/pgp-signature; name="signature.asc"\r\n'
        b"Content-Description: OpenPGP digital signature\r\n"
        b'Content-Disposition: attachment; filename="signature.asc"\r\n'
        b"\r\n" + signature.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
        b"--" + boundary.encode() + b"--\r\n"
    )


SIGNED_PART = (
    b'Content-Type: multipart/mixed; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"K=C3=ADnh g=E1=BB=ADi: Gi=E1=BA=A5y m=E1=BB=9Di h=E1=BB=8Dp s=E1=BB=91 45/GM-UBND \r\n"
    b"--inner\r\n"
    b'Content-Type: application/pdf; name="45-GM-UBND.pdf"\r\n'
    b'Content-Disposition: attachment; filename="45-GM-UBND.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQKJcOkw7zDtsOfCjEgMCBvYmoKPDwvVHlwZS9DYXRhbG9nPj4KZW5kb2JqCg==\r\n"
    b"--inner--\r\n"
)


def with_attachments(body: bytes, files: list[tuple[str, str, bytes]]) -> bytes:
    """A multipart/mixed message: a text body and files (name, content type, bytes)."""
    import base64

    out = (
        b"From: vanthu@stttt.gov.vn\r\nTo: vanthu@ubnd.gov.vn\r\nSubject: files\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="mix"\r\n\r\n'
        b"--mix\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body + b"\r\n"
    )
    for name, ctype, data in files:
        encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
        if name.isascii() and name.isprintable() and '"' not in name:
            param = b'filename="' + name.encode() + b'"'
        else:  # RFC 2231: any bytes, newlines too
            param = b"filename*=utf-8''" + urllib.parse.quote(name, safe="").encode()
        out += (
            b"--mix\r\nContent-Type: " + ctype.encode() + b"\r\n"
            b"Content-Disposition: attachment; " + param + b"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded
        )
    return out + b"--mix--\r\n"
