"""Held-out figures: messages written apart from the dev corpus (tests/fixtures/heldout).

The rules and the fact extraction were tuned on the 48 dev messages; these ones, written in
other clients, encodings and wordings, check that they generalise. Thresholds as for the dev
corpus: category, own symbol and urgency >= 95 %, attachment count 100 %. Misses are printed
per file (run with -s to see them when the test passes).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mailgw.mime.parse import parse_message
from mailgw.rules import default_rules, evaluate
from mailgw.rules.commands import context_for_message

HELDOUT = Path(__file__).resolve().parent / "fixtures" / "heldout"


@pytest.fixture(scope="module")
def results():
    rows = list(csv.DictReader((HELDOUT / "labels.csv").open(encoding="utf-8")))
    assert len(rows) >= 40
    rules = default_rules()
    out = []
    for row in rows:
        raw = (HELDOUT / row["file"]).read_bytes()
        pm = parse_message(raw)
        decision = evaluate(rules, context_for_message(raw))
        out.append((row, pm, decision))
    return out


def _check(results, name, got, want, threshold):
    misses = []
    for row, pm, d in results:
        g, w = got(row, pm, d), want(row)
        if g != w:
            misses.append(f"{row['file']}: got {g!r}, want {w!r}")
    rate = 1 - len(misses) / len(results)
    print(f"\nheld-out {name}: {rate:.1%} ({len(results) - len(misses)}/{len(results)})")
    for m in misses:
        print("  miss", m)
    assert rate >= threshold, f"{name} {rate:.1%} < {threshold:.0%}:\n" + "\n".join(misses)


def test_heldout_category(results):
    _check(
        results,
        "category",
        lambda row, pm, d: d.category,
        lambda row: row["category"],
        0.95,
    )


def test_heldout_symbol(results):
    _check(
        results,
        "symbol",
        lambda row, pm, d: pm.facts.symbol or "",
        lambda row: row["doc_symbol"],
        0.95,
    )


def test_heldout_urgency(results):
    _check(
        results,
        "urgency",
        lambda row, pm, d: pm.facts.urgency,
        lambda row: row["urgency"],
        0.95,
    )


def test_heldout_attachments(results):
    _check(
        results,
        "attachments",
        lambda row, pm, d: len(pm.attachment_files),
        lambda row: int(row["attachments"]),
        1.0,
    )


def test_heldout_parses_cleanly(results):
    for row, pm, _ in results:
        assert pm.subject, row["file"]
        assert pm.from_ and "@" in pm.from_[0].addr, row["file"]
        assert not [x for x in pm.defects if x.startswith("parser failure")], row["file"]
