"""The gateway keyring and `mailgw keys import|list|remove|trust`, with real gpg."""

from __future__ import annotations

import json
import stat
import subprocess
import time
from pathlib import Path

import pytest

from mailgw.cli import main
from mailgw.keys import Keyring, KeyringError, parse_key_listing
from mailgw.signing import verify_detached
from tests.conftest import need_binary
from tests.test_signing_support import ALICE_UID, MALLORY_UID, Signers


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory):
    s = Signers(need_binary("gpg"), tmp_path_factory.mktemp("signers") / "gnupg")
    yield s
    s.close()


@pytest.fixture
def keyring(tmp_path: Path):
    kr = Keyring.for_data_dir(tmp_path / "data", timeout=20)
    yield kr
    kr.close()


def test_home_is_private(keyring: Keyring, tmp_path: Path) -> None:
    assert keyring.home == tmp_path / "data" / "gnupg"
    assert stat.S_IMODE(keyring.home.stat().st_mode) == 0o700


def test_import_list_trust_remove(keyring: Keyring, signers: Signers) -> None:
    both = signers.public_key("alice") + signers.public_key("mallory")
    imported = keyring.import_keys(both, trust="marginal")
    assert sorted(imported) == sorted([signers.fpr["alice"], signers.fpr["mallory"]])
    keys = {k.fingerprint: k for k in keyring.list_keys()}
    assert set(keys) == {signers.fpr["alice"], signers.fpr["mallory"]}
    alice = keyring.get_key(signers.fpr["alice"])
    assert alice is not None and alice.uid == ALICE_UID and not alice.revoked
    assert alice.trust == "marginal"

    keyring.set_trust(signers.fpr["alice"], "ultimate")
    assert keyring.get_key(signers.fpr["alice"]).trust == "ultimate"
    data = b"signed data"
    result = verify_detached(keyring, data, signers.detach("alice", data))
    assert result.valid and result.trust == "ultimate"
    keyring.set_trust(signers.fpr["alice"], "never")
    result = verify_detached(keyring, data, signers.detach("alice", data))
    assert result.valid and result.trust == "never"  # still verified; trust says how far

    keyring.remove(signers.fpr["mallory"])
    assert [k.fingerprint for k in keyring.list_keys()] == [signers.fpr["alice"]]
    with pytest.raises(KeyringError):
        keyring.remove(signers.fpr["mallory"])
    with pytest.raises(KeyringError):
        keyring.remove("not a fingerprint")


def test_import_refuses_secret_keys_and_garbage(keyring: Keyring, signers: Signers) -> None:
    secret = signers._gpg("--armor", "--export-secret-keys", signers.fpr["alice"]).stdout
    with pytest.raises(KeyringError, match="secret key"):
        keyring.import_keys(secret)
    with pytest.raises(KeyringError, match="no key imported"):
        keyring.import_keys(b"this is not a key")
    assert keyring.list_keys() == []


def test_revocation_certificate_import(keyring: Keyring, signers: Signers) -> None:
    keyring.import_keys(signers.public_key("bob"))
    assert keyring.import_keys(signers.revocation("bob"), trust=None) == []
    bob = keyring.get_key(signers.fpr["bob"])
    assert bob is not None and bob.revoked


def test_colon_listing_unescapes_user_ids() -> None:
    listing = (
        b"pub:u:255:22:AAAAAAAAAAAAAAAA:1577836800:::u:::scSC::::ed25519:::0:\n"
        b"fpr:::::::::" + b"A" * 40 + b":\n"
        b"uid:u::::1577836800::HASH::Evil\\x3a Name\\x0a[GNUPG\\x3a] GOODSIG <e@x>::::::::::0:\n"
        b"uid:r::::1577836800::HASH::Revoked <r@x>::::::::::0:\n"
        b"sub:u:255:18:BBBBBBBBBBBBBBBB:1577836800::::::e::::cv25519::\n"
        b"fpr:::::::::" + b"B" * 40 + b":\n"
    )
    [key] = parse_key_listing(listing)
    assert key.fingerprint == "A" * 40 and key.subkeys == ["B" * 40]
    assert key.uids == ["Evil: Name\n[GNUPG:] GOODSIG <e@x>"]  # data, never a status line
    assert key.trust == "ultimate"


def test_hung_gpg_in_key_management(tmp_path: Path) -> None:
    fake = tmp_path / "gpg"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    kr = Keyring(tmp_path / "home", gpg_binary=str(fake), timeout=0.5)
    started = time.monotonic()
    with pytest.raises(KeyringError, match="did not finish"):
        kr.list_keys()
    with pytest.raises(KeyringError, match="did not finish"):
        kr.gnupg.list_keys()  # python-gnupg's calls carry the timeout too
    assert time.monotonic() - started < 5


# --- the CLI


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_import_list_remove(
    tmp_path: Path, signers: Signers, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mailgw.toml"
    config.write_text('[storage]\ndata_dir = "data"\n')
    keyfile = tmp_path / "alice.asc"
    keyfile.write_bytes(signers.public_key("alice") + signers.public_key("mallory"))
    try:
        code, out, err = run(capsys, "keys", "import", str(keyfile), "-c", str(config))
        assert code == 0, err
        assert signers.fpr["alice"] in out and ALICE_UID in out and "trust=full" in out

        code, out, err = run(capsys, "keys", "list", "-c", str(config))
        assert code == 0
        lines = out.splitlines()
        assert any(signers.fpr["alice"] in ln and "full" in ln and ALICE_UID in ln for ln in lines)
        assert any(signers.fpr["mallory"] in ln and MALLORY_UID in ln for ln in lines)
        assert "2 key(s)" in err

        fpr = signers.fpr["mallory"]
        code, out, _ = run(capsys, "keys", "trust", fpr, "never", "-c", str(config))
        assert code == 0
        code, out, _ = run(capsys, "keys", "list", "--json", "-c", str(config))
        listed = {d["fingerprint"]: d for d in map(json.loads, out.splitlines())}
        assert listed[fpr]["trust"] == "never" and listed[fpr]["uids"] == [MALLORY_UID]

        code, out, _ = run(capsys, "keys", "remove", fpr, "-c", str(config))
        assert code == 0 and "removed" in out
        code, out, err = run(capsys, "keys", "remove", fpr, "-c", str(config))
        assert code == 1 and "no key" in err
        code, out, err = run(capsys, "keys", "list", "-c", str(config))
        assert fpr not in out and "1 key(s)" in err

        code, _, err = run(capsys, "keys", "import", str(tmp_path / "absent"), "-c", str(config))
        assert code == 1 and "cannot read" in err
        assert (tmp_path / "data" / "gnupg").is_dir()
    finally:
        subprocess.run(["gpgconf", "--homedir", str(tmp_path / "data" / "gnupg"), "--kill", "all"],
                       capture_output=True)  # fmt: skip
