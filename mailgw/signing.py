"""OpenPGP signature verification: PGP/MIME, inline-signed text, detached signatures on files.

What is verified, against the gateway keyring (:class:`mailgw.keys.Keyring`):

* PGP/MIME (RFC 3156): a ``multipart/signed`` part with ``protocol=application/pgp-signature``.
  The signed part is taken byte for byte from the raw message (line endings made CRLF), never
  from a re-serialised ``email`` object.
* inline-signed text: a ``-----BEGIN PGP SIGNED MESSAGE-----`` block in a text/plain part,
  taken from the part's transfer-decoded bytes (not from the NFC-normalised body text).
* detached signatures on files: an attachment ``X.pdf`` with ``X.pdf.sig``, ``X.pdf.asc`` or
  ``X.sig`` beside it, checked over the decoded payloads.

Trust in what gpg says: status lines are read from a pipe of their own (see mailgw.keys); data
goes to gpg on stdin or in temporary files under fixed names; the signer's fingerprint is the one
in VALIDSIG and the user id is looked up in the keyring by that fingerprint, never taken from
the user id gpg echoes. ``fingerprint`` and ``uid`` are only set when the signing key really made
the signature (VALIDSIG); for a bad signature only the claimed ``key_id`` is recorded.

Everything here blocks on gpg (with a timeout) and is meant for a pipeline worker thread.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from typing import TYPE_CHECKING, Any

from mailgw.keys import STATUS_TRUST, GpgRun, GpgTimeout, Keyring, KeyringError

if TYPE_CHECKING:
    from mailgw.mime.model import Attachment, ParsedMessage
    from mailgw.pipeline import Job

log = logging.getLogger(__name__)

# status values (machine names) and the reason shown when a signature is not valid
GOOD = "good"
BAD = "bad"
NO_PUBLIC_KEY = "no_public_key"
EXPIRED_KEY = "expired_key"
REVOKED_KEY = "revoked_key"
EXPIRED_SIGNATURE = "expired_signature"
ERROR = "error"
REASONS = {
    BAD: "bad signature",
    NO_PUBLIC_KEY: "no public key",
    EXPIRED_KEY: "expired key",
    REVOKED_KEY: "revoked key",
    EXPIRED_SIGNATURE: "expired signature",
    ERROR: "signature could not be checked",
}

PGP_MIME = "pgp/mime"
INLINE = "inline"
DETACHED = "detached"
DOCUMENTS = "documents"  # message level: only its files carry signatures

SIGNATURE_SUFFIXES = (".sig", ".asc")
MAX_DEPTH = 20
MAX_PARTS = 500

_BEGIN_SIGNED = b"-----BEGIN PGP SIGNED MESSAGE-----"
_END_SIGNATURE = b"-----END PGP SIGNATURE-----"


@dataclass
class SignatureResult:
    """The outcome of checking one signature."""

    kind: str  # PGP_MIME, INLINE, DETACHED
    status: str  # GOOD, BAD, NO_PUBLIC_KEY, EXPIRED_KEY, REVOKED_KEY, EXPIRED_SIGNATURE, ERROR
    valid: bool
    fingerprint: str | None = None  # primary key fingerprint, only when VALIDSIG was given
    uid: str | None = None  # primary user id of that key, from the keyring
    trust: str | None = None  # unknown, never, marginal, full, ultimate
    key_id: str | None = None  # the key id the signature names (also for bad signatures)
    signed_at: dt.datetime | None = None
    reason: str | None = None  # why it is not valid, or a note

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "fingerprint": self.fingerprint,
            "uid": self.uid,
            "trust": self.trust,
            "reason": self.reason,
            "signed_at": self.signed_at.isoformat() if self.signed_at else None,
            "status": self.status,
            "kind": self.kind,
            "key_id": self.key_id,
        }


@dataclass
class DocumentSignature:
    """A detached signature that accompanies one attached file."""

    filename: str | None
    sha256: str
    signature_filename: str | None
    result: SignatureResult

    def to_dict(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "sha256": self.sha256,
            "signature_filename": self.signature_filename,
            **self.result.to_dict(),
        }


@dataclass
class MessageSignature:
    """Signature facts of a message: its own signature (if any) and those of its files."""

    message: SignatureResult | None = None
    documents: list[DocumentSignature] = field(default_factory=list)

    @property
    def signed(self) -> bool:
        return self.message is not None or bool(self.documents)

    def summary(self) -> SignatureResult | None:
        """The message-level result; when only files are signed, one made from theirs."""
        if self.message is not None or not self.documents:
            return self.message
        results = [d.result for d in self.documents]
        first_bad = next((r for r in results if not r.valid), None)
        signers = {r.fingerprint for r in results}
        same = results[0] if len(signers) == 1 and results[0].fingerprint else None
        note = "only attached files are signed"
        if first_bad is not None:
            note += f"; {first_bad.reason}"
        return SignatureResult(
            kind=DOCUMENTS,
            status=first_bad.status if first_bad else GOOD,
            valid=first_bad is None,
            fingerprint=same.fingerprint if same else None,
            uid=same.uid if same else None,
            trust=same.trust if same else None,
            key_id=same.key_id if same else None,
            signed_at=same.signed_at if same else None,
            reason=note,
        )

    def to_dict(self) -> dict[str, Any] | None:
        """The facts stored in messages.signature and seen by the rules; None when unsigned.

        Keys: mailgw.rules.context.SIGNATURE_KEYS (valid, fingerprint, uid, trust, reason) plus
        signed_at (ISO 8601), status, kind, key_id and documents (sha256 -> document facts).
        """
        summary = self.summary()
        if summary is None:
            return None
        out = summary.to_dict()
        out["documents"] = {d.sha256: d.to_dict() for d in self.documents}
        return out


# --- reading gpg's status lines


def _timestamp(value: str) -> dt.datetime | None:
    try:
        if value.isdigit():
            return dt.datetime.fromtimestamp(int(value), dt.UTC)
        if "T" in value:
            return dt.datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


_OUTCOMES = {
    "GOODSIG": GOOD,
    "BADSIG": BAD,
    "EXPSIG": EXPIRED_SIGNATURE,
    "EXPKEYSIG": EXPIRED_KEY,
    "REVKEYSIG": REVOKED_KEY,
    "ERRSIG": ERROR,
}


def interpret(run: GpgRun, keyring: Keyring, kind: str) -> SignatureResult:
    """Turn the status lines of one ``gpg --verify`` into a result (the best signature wins)."""
    sigs: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for keyword, rest in run.status:
        fields = rest.split()
        if keyword == "NEWSIG":
            current = {}
            sigs.append(current)
            continue
        if current is None and keyword in (*_OUTCOMES, "VALIDSIG"):
            current = {}
            sigs.append(current)
        if current is None:
            continue
        if keyword in _OUTCOMES and "status" not in current:
            current["status"] = _OUTCOMES[keyword]
            current["key_id"] = fields[0].upper() if fields else None
            if keyword == "ERRSIG" and len(fields) >= 6:
                current["signed_at"] = _timestamp(fields[4])
                if fields[5] == "9":
                    current["status"] = NO_PUBLIC_KEY
                elif fields[5] == "4":
                    current["reason"] = "unsupported algorithm"
        elif keyword == "VALIDSIG" and len(fields) >= 3:
            current["validsig"] = True
            current["fingerprint"] = (fields[9] if len(fields) >= 10 else fields[0]).upper()
            current["signed_at"] = _timestamp(fields[2])
        elif keyword in STATUS_TRUST:
            current["trust"] = STATUS_TRUST[keyword]
    if not sigs:
        return SignatureResult(kind, ERROR, False, reason="no OpenPGP signature found")
    best = next((s for s in sigs if s.get("status") == GOOD and s.get("validsig")), sigs[0])
    status = best.get("status", ERROR)
    result = SignatureResult(
        kind=kind,
        status=status,
        valid=False,
        key_id=best.get("key_id"),
        signed_at=best.get("signed_at"),
        trust=best.get("trust"),
    )
    if best.get("validsig"):
        key = keyring.get_key(best["fingerprint"])
        if key is not None:
            result.fingerprint = key.fingerprint
            result.uid = key.uid
            if result.trust is None and status == GOOD:
                result.trust = key.trust
    # gpg exits 1 for a good signature by a key trusted "never": trust is reported, not judged
    result.valid = status == GOOD and result.fingerprint is not None
    if status == GOOD and not result.valid:
        result.status = ERROR
        result.reason = "signature not confirmed by gpg"
    elif not result.valid:
        result.reason = best.get("reason") or REASONS.get(status, status)
    if len(sigs) > 1:
        note = f"{len(sigs)} signatures, reported: the {'valid' if result.valid else 'first'} one"
        result.reason = f"{result.reason}; {note}" if result.reason else note
    return result


def _checked(keyring: Keyring, kind: str, work: Callable[[], GpgRun]) -> SignatureResult:
    try:
        return interpret(work(), keyring, kind)
    except GpgTimeout as exc:
        log.warning("signature check timed out: %s", exc)
        return SignatureResult(kind, ERROR, False, reason="gpg timed out")
    except KeyringError as exc:
        log.error("signature check failed: %s", exc)
        return SignatureResult(kind, ERROR, False, reason=f"gpg failed: {exc}")


def verify_detached(
    keyring: Keyring, data: bytes, signature: bytes, kind: str = DETACHED
) -> SignatureResult:
    """Check a detached signature (armored or binary) over ``data``."""
    return _checked(
        keyring,
        kind,
        lambda: keyring.run(["--verify", "--", "{signature}", "-"], data,
                            files={"signature": signature}),
    )  # fmt: skip


def verify_cleartext(keyring: Keyring, block: bytes) -> SignatureResult:
    """Check a cleartext-signed block (``-----BEGIN PGP SIGNED MESSAGE-----`` … signature)."""
    return _checked(
        keyring,
        INLINE,
        lambda: keyring.run(["--verify", "--", "{message}"], files={"message": block}),
    )


# --- finding signed parts in the raw message


@dataclass
class _Part:
    start: int  # offset of the part's first header byte (or its body when it has no headers)
    end: int  # offset just past its last body byte (the CRLF before a delimiter excluded)
    body_start: int
    content_type: str
    protocol: str
    attachment: bool = False  # Content-Disposition: attachment
    children: list[_Part] = field(default_factory=list)


def _crlf(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", raw)


class _Walker:
    def __init__(self, buf: bytes):
        self.buf = buf
        self.count = 0

    def part(self, start: int, end: int, depth: int) -> _Part:
        self.count += 1
        buf = self.buf
        if buf.startswith(b"\r\n", start):
            head_end, body_start = start, start + 2
        else:
            i = buf.find(b"\r\n\r\n", start, end)
            head_end, body_start = (end, end) if i < 0 else (i + 2, i + 4)
        headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(
            buf[start:head_end], headersonly=True
        )
        ctype = headers.get_content_type()
        protocol = str(headers.get_param("protocol", "") or "").lower()
        disposition = str(headers.get("content-disposition", "")).split(";")[0].strip().lower()
        part = _Part(start, end, body_start, ctype, protocol, disposition == "attachment")
        boundary = headers.get_param("boundary") if ctype.startswith("multipart/") else None
        if isinstance(boundary, tuple):  # RFC 2231 encoded
            boundary = email.utils.collapse_rfc2231_value(boundary)
        if not boundary or depth >= MAX_DEPTH:
            return part
        delim = re.compile(rb"^--" + re.escape(str(boundary).encode("latin-1", "replace"))
                           + rb"(--)?[ \t]*(?:\r\n|\Z)", re.M)  # fmt: skip
        pos = None
        for m in delim.finditer(buf, body_start, end):
            if pos is not None and self.count < MAX_PARTS:
                part.children.append(self.part(pos, max(pos, m.start() - 2), depth + 1))
            if m.group(1):
                break
            pos = m.end()
        return part


def _walk(part: _Part):
    yield part
    for child in part.children:
        yield from _walk(child)


def _decoded(buf: bytes, part: _Part) -> bytes:
    msg = email.message_from_bytes(buf[part.start : part.end], policy=email.policy.compat32)
    payload = msg.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _inline_block(text: bytes) -> tuple[bytes, bool] | None:
    """The cleartext-signed block of a text, and whether text lies outside it."""
    start = text.find(_BEGIN_SIGNED)
    if start < 0 or (start > 0 and text[start - 1 : start] not in (b"\n", b"\r")):
        return None
    end = text.find(_END_SIGNATURE, start)
    if end < 0:
        return None
    end += len(_END_SIGNATURE)
    while end < len(text) and text[end : end + 1] in (b"\r", b"\n"):
        end += 1
    outside = (text[:start] + text[end:]).strip()
    return text[start:end], bool(outside)


def _targets(att: Attachment, attachments: list[Attachment]) -> Attachment | None:
    name = att.filename or ""
    base = name[:-4]
    if not base or att.content_type == "application/pgp-keys":
        return None
    files = [a for a in attachments if a is not att and a.filename]
    exact = [a for a in files if a.filename == base]
    if exact:
        return exact[0]
    stem = [a for a in files if not a.filename.lower().endswith(SIGNATURE_SUFFIXES)
            and a.filename.rsplit(".", 1)[0] == base]  # fmt: skip
    return stem[0] if len(stem) == 1 else None


def verify_documents(keyring: Keyring, attachments: list[Attachment]) -> list[DocumentSignature]:
    """Detached signatures (X.pdf.sig, X.pdf.asc, X.sig) beside the files they sign."""
    out = []
    for att in attachments:
        if not (att.filename or "").lower().endswith(SIGNATURE_SUFFIXES):
            continue
        target = _targets(att, attachments)
        if target is None:
            continue
        result = verify_detached(keyring, target.payload, att.payload)
        out.append(DocumentSignature(target.filename, target.sha256, att.filename, result))
    return out


def verify_message(
    keyring: Keyring, raw: bytes, parsed: ParsedMessage | None = None
) -> MessageSignature:
    """All signatures of a message: its PGP/MIME or inline signature, and its files'."""
    buf = _crlf(raw)
    root = _Walker(buf).part(0, len(buf), 0)
    outcome = MessageSignature()
    for part in _walk(root):
        if part.content_type == "multipart/signed" and len(part.children) >= 2:
            if part.protocol != "application/pgp-signature":
                continue
            signed, sig = part.children[0], part.children[1]
            signed_bytes = buf[signed.start : signed.end]
            outcome.message = verify_detached(keyring, signed_bytes, _decoded(buf, sig), PGP_MIME)
            break
    if outcome.message is None:
        for part in _walk(root):
            if part.content_type != "text/plain" or part.children or part.attachment:
                continue
            found = _inline_block(_decoded(buf, part))
            if found is None:
                continue
            block, outside = found
            outcome.message = verify_cleartext(keyring, block)
            if outside:
                note = "only part of the text is signed"
                r = outcome.message
                r.reason = f"{r.reason}; {note}" if r.reason else note
            break
    if parsed is not None:
        outcome.documents = verify_documents(keyring, parsed.attachments)
    return outcome


def signature_stage(keyring: Keyring) -> Callable[[Job], None]:
    """A pipeline stage that sets ``job.signature`` (None for an unsigned message)."""

    def stage(job: Job) -> None:
        job.signature = verify_message(keyring, job.raw, job.parsed).to_dict()

    return stage
