"""Real-world malformed mail: CPython's own email test data must parse without crash or hang."""

from __future__ import annotations

import time
from pathlib import Path

from mailgw.mime.model import ParsedMessage
from mailgw.mime.parse import parse_message
from tests.conftest import need

DATA = Path("/usr/lib/python3.11/test/test_email/data")


def _files() -> list[Path]:
    need(DATA.is_dir(), f"{DATA} (install libpython3.11-testsuite)")
    files = sorted(p for p in DATA.iterdir() if p.is_file())
    assert files
    return files


def test_all_cpython_email_test_messages_parse():
    for path in _files():
        raw = path.read_bytes()
        t0 = time.monotonic()
        pm = parse_message(raw)
        assert isinstance(pm, ParsedMessage), path.name
        assert time.monotonic() - t0 < 5, path.name
        assert pm.size == len(raw)
        assert not [d for d in pm.defects if d.startswith("parser failure")], (
            path.name,
            pm.defects,
        )


def test_cpython_messages_truncated_anywhere_still_parse():
    for path in _files()[:20]:
        raw = path.read_bytes()
        for cut in (len(raw) // 3, len(raw) // 2, len(raw) - 7):
            pm = parse_message(raw[: max(cut, 0)], extract_text=False)
            assert isinstance(pm, ParsedMessage)
