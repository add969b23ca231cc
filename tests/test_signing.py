"""Signature verification with real gpg and keys generated here (tests/test_signing_support.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import unicodedata
from pathlib import Path

import pytest

from mailgw.keys import Keyring
from mailgw.mime.model import Attachment
from mailgw.mime.parse import parse_message
from mailgw.pipeline import Job
from mailgw.signing import (
    BAD,
    DETACHED,
    DOCUMENTS,
    EXPIRED_KEY,
    EXPIRED_SIGNATURE,
    GOOD,
    INLINE,
    NO_PUBLIC_KEY,
    PGP_MIME,
    REVOKED_KEY,
    signature_stage,
    verify_documents,
    verify_message,
)
from tests.conftest import need_binary
from tests.test_signing_support import (
    ALICE_UID,
    PAST,
    SIGNED_PART,
    Signers,
    pgp_mime,
    with_attachments,
)

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <</Type/Catalog>> endobj\n" + bytes(range(256)) * 8


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory):
    s = Signers(need_binary("gpg"), tmp_path_factory.mktemp("signers") / "gnupg")
    yield s
    s.close()


@pytest.fixture(scope="module")
def keyring(signers: Signers, tmp_path_factory: pytest.TempPathFactory):
    kr = Keyring.for_data_dir(tmp_path_factory.mktemp("data"), timeout=20)
    for who in ("alice", "old", "bob"):
        kr.import_keys(signers.public_key(who))
    kr.import_keys(signers.revocation("bob"), trust=None)
    yield kr
    kr.close()


def check(keyring: Keyring, raw: bytes) -> dict:
    facts = verify_message(keyring, raw, parse_message(raw)).to_dict()
    assert facts is not None
    json.dumps(facts)  # stored in a JSON column as it is
    return facts


def recent(value: str | None) -> bool:
    assert value is not None
    when = dt.datetime.fromisoformat(value)
    return abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 600


# --- PGP/MIME


def test_pgp_mime_good_signature(keyring: Keyring, signers: Signers) -> None:
    raw = pgp_mime(SIGNED_PART, signers.detach("alice", SIGNED_PART))
    facts = check(keyring, raw)
    assert facts["valid"] is True
    assert facts["status"] == GOOD and facts["kind"] == PGP_MIME
    assert facts["fingerprint"] == signers.fpr["alice"]
    assert facts["uid"] == ALICE_UID
    assert facts["trust"] == "full"
    assert facts["reason"] is None
    assert recent(facts["signed_at"])
    assert facts["documents"] == {}


def test_pgp_mime_with_lf_line_endings_and_nested(keyring: Keyring, signers: Signers) -> None:
    raw = pgp_mime(SIGNED_PART, signers.detach("alice", SIGNED_PART))
    assert check(keyring, raw.replace(b"\r\n", b"\n"))["valid"] is True
    # a list server wrapped it in multipart/mixed and added a footer
    head, _, body = raw.partition(b"\r\n\r\n")
    ctype = head[head.index(b"Content-Type:") :]
    wrapped = (
        b"From: list@ubnd.gov.vn\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n--outer\r\n'
        + ctype + b"\r\n\r\n" + body + b"\r\n--outer\r\nContent-Type: text/plain\r\n\r\n"
        b"-- footer --\r\n--outer--\r\n"
    )  # fmt: skip
    facts = check(keyring, wrapped)
    assert facts["valid"] is True and facts["fingerprint"] == signers.fpr["alice"]


def test_pgp_mime_altered_body_is_a_bad_signature(keyring: Keyring, signers: Signers) -> None:
    raw = pgp_mime(SIGNED_PART, signers.detach("alice", SIGNED_PART))
    altered = raw.replace(b"45/GM-UBND \r\n", b"46/GM-UBND \r\n")
    assert altered != raw
    facts = check(keyring, altered)
    assert facts["valid"] is False
    assert facts["status"] == BAD and facts["reason"] == "bad signature"
    assert facts["fingerprint"] is None and facts["uid"] is None  # never for a bad signature
    assert facts["key_id"] == signers.fpr["alice"][-16:]


def test_unknown_key(keyring: Keyring, signers: Signers) -> None:
    facts = check(keyring, pgp_mime(SIGNED_PART, signers.detach("mallory", SIGNED_PART)))
    assert facts["valid"] is False
    assert facts["status"] == NO_PUBLIC_KEY and facts["reason"] == "no public key"
    assert facts["fingerprint"] is None and facts["uid"] is None
    assert facts["key_id"] == signers.fpr["mallory"][-16:]


def test_expired_key(keyring: Keyring, signers: Signers) -> None:
    # the key expired on 2020-02-01; it signed on 2020-01-02 while it was still good
    sig = signers.detach("old", SIGNED_PART, "--faked-system-time", PAST)
    facts = check(keyring, pgp_mime(SIGNED_PART, sig))
    assert facts["valid"] is False
    assert facts["status"] == EXPIRED_KEY and facts["reason"] == "expired key"
    assert facts["fingerprint"] == signers.fpr["old"]  # the key did make it
    assert facts["uid"] == "Old Key <old@ubnd.gov.vn>"
    assert facts["signed_at"] == "2020-01-02T00:00:00+00:00"


def test_revoked_key(keyring: Keyring, signers: Signers) -> None:
    facts = check(keyring, pgp_mime(SIGNED_PART, signers.detach("bob", SIGNED_PART)))
    assert facts["valid"] is False
    assert facts["status"] == REVOKED_KEY and facts["reason"] == "revoked key"
    assert facts["fingerprint"] == signers.fpr["bob"]


def test_expired_signature(keyring: Keyring, signers: Signers) -> None:
    sig = signers.detach(
        "alice", SIGNED_PART, "--faked-system-time", PAST, "--default-sig-expire", "1d"
    )
    facts = check(keyring, pgp_mime(SIGNED_PART, sig))
    assert facts["valid"] is False
    assert facts["status"] == EXPIRED_SIGNATURE and facts["reason"] == "expired signature"


def test_unsigned_message_has_no_facts(keyring: Keyring) -> None:
    raw = with_attachments(b"no signature here", [("a.pdf", "application/pdf", PDF)])
    assert verify_message(keyring, raw, parse_message(raw)).to_dict() is None


# --- inline


TEXT = "Kính gửi: Ủy ban nhân dân tỉnh\nSố: 45/GM-UBND\nTrân trọng kính mời.\n"


def test_inline_good_signature(keyring: Keyring, signers: Signers) -> None:
    raw = with_attachments(signers.clearsign("alice", TEXT.encode()), [])
    facts = check(keyring, raw)
    assert facts["valid"] is True and facts["kind"] == INLINE
    assert facts["fingerprint"] == signers.fpr["alice"] and facts["uid"] == ALICE_UID
    assert facts["reason"] is None


def test_inline_decomposed_vietnamese_is_checked_as_sent(
    keyring: Keyring, signers: Signers
) -> None:
    # Windows keyboards may type tone marks decomposed (NFD); the parser NFC-normalises the
    # body text, so verification must work from the part's own bytes
    text = unicodedata.normalize("NFD", TEXT).encode()
    assert text != TEXT.encode()
    raw = with_attachments(signers.clearsign("alice", text), [])
    assert check(keyring, raw)["valid"] is True


def test_inline_altered_text(keyring: Keyring, signers: Signers) -> None:
    signed = signers.clearsign("alice", TEXT.encode())
    raw = with_attachments(signed.replace(b"45/GM", b"99/GM"), [])
    facts = check(keyring, raw)
    assert facts["valid"] is False and facts["status"] == BAD


def test_inline_with_unsigned_text_around_it(keyring: Keyring, signers: Signers) -> None:
    body = b"Unsigned words before.\r\n" + signers.clearsign("alice", TEXT.encode())
    facts = check(keyring, with_attachments(body, []))
    assert facts["valid"] is True
    assert "only part of the text is signed" in facts["reason"]


# --- detached signatures on attachments


@pytest.mark.parametrize(
    ("sig_name", "ctype", "armor"),
    [
        ("QD-12.pdf.sig", "application/pgp-signature", False),
        ("QD-12.pdf.asc", "application/pgp-signature", True),
        ("QD-12.sig", "application/octet-stream", False),
    ],
)
def test_detached_good(
    keyring: Keyring, signers: Signers, sig_name: str, ctype: str, armor: bool
) -> None:
    sig = signers.detach("alice", PDF, armor=armor)
    raw = with_attachments(
        b"xem file", [("QD-12.pdf", "application/pdf", PDF), (sig_name, ctype, sig)]
    )
    facts = check(keyring, raw)
    sha = hashlib.sha256(PDF).hexdigest()
    doc = facts["documents"][sha]
    assert doc["valid"] is True and doc["kind"] == DETACHED
    assert doc["filename"] == "QD-12.pdf" and doc["signature_filename"] == sig_name
    assert doc["fingerprint"] == signers.fpr["alice"] and doc["uid"] == ALICE_UID
    # no message signature: the message facts summarise the files'
    assert facts["kind"] == DOCUMENTS and facts["valid"] is True
    assert facts["fingerprint"] == signers.fpr["alice"]
    assert facts["reason"] == "only attached files are signed"


def test_detached_altered_attachment(keyring: Keyring, signers: Signers) -> None:
    sig = signers.detach("alice", PDF)
    altered = PDF[:-1] + b"\x00"
    raw = with_attachments(
        b"x", [("QD-12.pdf", "application/pdf", altered), ("QD-12.pdf.asc", "text/plain", sig)]
    )
    facts = check(keyring, raw)
    doc = facts["documents"][hashlib.sha256(altered).hexdigest()]
    assert doc["valid"] is False and doc["status"] == BAD and doc["fingerprint"] is None
    assert facts["valid"] is False and facts["status"] == BAD
    assert "bad signature" in facts["reason"]


def test_message_and_documents_together(keyring: Keyring, signers: Signers) -> None:
    body = signers.clearsign("alice", TEXT.encode())
    sig = signers.detach("mallory", PDF)
    raw = with_attachments(body, [("a.pdf", "application/pdf", PDF), ("a.pdf.sig", "x/y", sig)])
    facts = check(keyring, raw)
    assert facts["kind"] == INLINE and facts["valid"] is True
    doc = facts["documents"][hashlib.sha256(PDF).hexdigest()]
    assert doc["status"] == NO_PUBLIC_KEY and doc["valid"] is False


# --- SigSpoof: crafted names and literal data carrying fake status lines


def fake_status(signers: Signers) -> str:
    fpr = signers.fpr["alice"]
    return (
        f"\n[GNUPG:] GOODSIG {fpr[-16:]} {ALICE_UID}"
        f"\n[GNUPG:] VALIDSIG {fpr} 2026-01-01 1767225600 0 4 0 22 8 00 {fpr}"
        "\n[GNUPG:] TRUST_ULTIMATE 0 pgp\n"
    )


def recording(keyring: Keyring, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real = keyring._run

    def spy(args, stdin, timeout):
        calls.append(list(args))
        return real(args, stdin, timeout)

    monkeypatch.setattr(keyring, "_run", spy)
    return calls


def test_crafted_file_name_is_not_believed(
    keyring: Keyring, signers: Signers, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = recording(keyring, monkeypatch)
    name = "QD.pdf" + fake_status(signers).rstrip("\n")
    sig = signers.detach("mallory", PDF)
    # straight to the function, with the name as an attachment could carry it
    atts = [
        Attachment(name, "application/pdf", len(PDF), hashlib.sha256(PDF).hexdigest(), payload=PDF),
        Attachment(name + ".sig", "application/pgp-signature", len(sig), "0", payload=sig),
    ]
    [doc] = verify_documents(keyring, atts)
    assert doc.filename == name
    assert doc.result.valid is False and doc.result.status == NO_PUBLIC_KEY
    assert doc.result.fingerprint is None and doc.result.uid is None
    # and through the parser (RFC 2231 lets a name carry newlines)
    raw = with_attachments(b"x", [(name, "application/pdf", PDF), (name + ".sig", "a/b", sig)])
    facts = check(keyring, raw)
    assert facts["valid"] is False and facts["fingerprint"] is None
    assert all(d["status"] == NO_PUBLIC_KEY for d in facts["documents"].values())
    # no name from the message ever reached gpg's command line
    assert calls and not any("GNUPG" in a or "QD" in a for c in calls for a in c)


def test_crafted_literal_data_is_not_believed(keyring: Keyring, signers: Signers) -> None:
    spoof = ("Kính gửi" + fake_status(signers)).encode()
    # signed content carrying status lines: detached over a file, inline text
    doc_sig = signers.detach("mallory", spoof)
    raw = with_attachments(
        signers.clearsign("mallory", spoof),
        [("bc.txt", "text/plain", spoof), ("bc.txt.asc", "text/plain", doc_sig)],
    )
    facts = check(keyring, raw)
    assert facts["kind"] == INLINE
    assert facts["valid"] is False and facts["status"] == NO_PUBLIC_KEY
    assert facts["fingerprint"] is None and facts["uid"] is None and facts["trust"] is None
    [doc] = facts["documents"].values()
    assert doc["valid"] is False and doc["fingerprint"] is None
    # an altered text by a known key with fake lines in it stays bad
    good = signers.clearsign("alice", b"Xin chao\n")
    tampered = good.replace(b"Xin chao\n", b"Xin chao" + fake_status(signers).encode())
    facts = check(keyring, with_attachments(tampered, []))
    assert facts["valid"] is False and facts["status"] == BAD and facts["fingerprint"] is None


def test_crafted_literal_file_name_in_signed_data(keyring: Keyring, signers: Signers) -> None:
    """An OpenPGP message whose literal packet names a file with fake status lines in it."""
    from mailgw.signing import verify_cleartext

    opaque = signers._gpg(
        "--local-user", signers.fpr["mallory"], "--sign", "--armor",
        "--set-filename", "x" + fake_status(signers), "--output", "-", input=b"data",
    ).stdout  # fmt: skip
    result = verify_cleartext(keyring, opaque)
    assert result.valid is False and result.status == NO_PUBLIC_KEY
    assert result.fingerprint is None and result.uid is None


# --- timeouts and the pipeline stage


def test_hung_gpg_is_killed(tmp_path: Path) -> None:
    fake = tmp_path / "gpg"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    kr = Keyring(tmp_path / "home", gpg_binary=str(fake), timeout=0.5)
    raw = pgp_mime(SIGNED_PART, b"-----BEGIN PGP SIGNATURE-----\r\n")
    started = time.monotonic()
    facts = verify_message(kr, raw).to_dict()
    assert time.monotonic() - started < 5
    assert facts is not None
    assert facts["valid"] is False and facts["reason"] == "gpg timed out"


def test_signature_stage_sets_job_signature(keyring: Keyring, signers: Signers) -> None:
    raw = pgp_mime(SIGNED_PART, signers.detach("alice", SIGNED_PART))
    job = Job(1, "Q1", "a@b", ["c@d"], None, None, None, dt.datetime.now(dt.UTC), raw)
    job.parsed = parse_message(raw)
    signature_stage(keyring)(job)
    assert job.signature is not None and job.signature["valid"] is True
    assert job.signature["uid"] == ALICE_UID
    unsigned = Job(
        2, "Q2", "a@b", ["c@d"], None, None, None, dt.datetime.now(dt.UTC), b"x: y\r\n\r\nhi\r\n"
    )
    signature_stage(keyring)(unsigned)
    assert unsigned.signature is None


def test_clearsigned_text_file_is_not_the_message_signature(
    keyring: Keyring, signers: Signers
) -> None:
    block = signers.clearsign("alice", TEXT.encode())
    raw = with_attachments(b"see the file", [("note.txt", "text/plain", block)])
    assert verify_message(keyring, raw, parse_message(raw)).to_dict() is None
