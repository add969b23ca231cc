"""Signatures checked in flight: facts stored with the message and usable by the rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailgw.config import Config
from mailgw.db.models import HELD, RELAYED
from mailgw.keys import Keyring
from tests.conftest import need_binary
from tests.smtp_server import DownstreamSMTP
from tests.test_gateway_relay import relay_to, send, wait_state
from tests.test_signing_support import SIGNED_PART, Signers, pgp_mime

RULES = """
include = ["default"]

[[rule]]
name = "stttt-must-sign"
description = "Thư tự xưng từ Sở TTTT mà không có chữ ký hợp lệ thì giữ lại"
when.all = [
  { field = "from", ends_with = "@stttt.gov.vn" },
  { not = { all = [
      { field = "signature.valid", equals = true },
      { field = "signature.trust", in = ["full", "ultimate"] },
  ] } },
]
then = { hold = "thiếu chữ ký số hợp lệ" }
"""


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signers]:
    s = Signers(need_binary("gpg"), tmp_path_factory.mktemp("signers") / "gnupg")
    yield s
    s.close()


@pytest.fixture
def downstream() -> Iterator[DownstreamSMTP]:
    with DownstreamSMTP() as srv:
        yield srv


async def test_signed_mail_passes_and_spoofed_mail_is_held(
    config: Config, make_gateway, downstream: DownstreamSMTP, signers: Signers, tmp_path: Path
) -> None:
    keyring = Keyring.for_data_dir(config.storage.data_dir)
    keyring.import_keys(signers.public_key("alice"))
    keyring.close()
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    config.rules.file = rules
    gw = await make_gateway(relay_to(config, downstream))

    signed = pgp_mime(SIGNED_PART, signers.detach("alice", SIGNED_PART))
    _, reply = await send(gw, signed, ["vanthu@ubnd.gov.vn"], mail_from="vanthu@stttt.gov.vn")
    row = await wait_state(gw, reply.rsplit(" ", 1)[-1], (RELAYED,))
    assert row.signature["valid"] is True
    assert row.signature["fingerprint"] == signers.fpr["alice"]
    [got] = await downstream.async_wait_for_messages(1)
    assert got.data.endswith(signed)  # the signature still verifies downstream

    forged = pgp_mime(SIGNED_PART, signers.detach("mallory", SIGNED_PART))
    _, reply = await send(gw, forged, ["vanthu@ubnd.gov.vn"], mail_from="vanthu@stttt.gov.vn")
    row = await wait_state(gw, reply.rsplit(" ", 1)[-1], (HELD,))
    assert row.signature["valid"] is False and row.signature["status"] == "no_public_key"
    assert "thiếu chữ ký số hợp lệ" in row.hold_reason

    tampered = pgp_mime(SIGNED_PART.replace(b"45/GM", b"46/GM"),
                        signers.detach("alice", SIGNED_PART))  # fmt: skip
    _, reply = await send(gw, tampered, ["vanthu@ubnd.gov.vn"], mail_from="vanthu@stttt.gov.vn")
    row = await wait_state(gw, reply.rsplit(" ", 1)[-1], (HELD,))
    assert row.signature["status"] == "bad"
