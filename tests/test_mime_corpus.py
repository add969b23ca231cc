"""Corpus figures for the message reader: own document symbol, urgency, attachment count."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mailgw.mime.parse import parse_message

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "dev"

pytestmark = pytest.mark.skipif(
    not (CORPUS / "labels.csv").exists(), reason="labelled corpus not present"
)


@pytest.fixture(scope="module")
def results():
    rows = list(csv.DictReader((CORPUS / "labels.csv").open(encoding="utf-8")))
    out = []
    for row in rows:
        pm = parse_message((CORPUS / row["file"]).read_bytes())
        out.append((row, pm))
    return out


def _rate(results, ok) -> float:
    return sum(1 for row, pm in results if ok(row, pm)) / len(results)


def test_symbol_exact_match(results):
    misses = [
        (row["file"], pm.facts.symbol, row["doc_symbol"])
        for row, pm in results
        if (pm.facts.symbol or "") != row["doc_symbol"]
    ]
    assert 1 - len(misses) / len(results) >= 0.95, misses


def test_urgency(results):
    misses = [
        (row["file"], pm.facts.urgency, row["urgency"])
        for row, pm in results
        if pm.facts.urgency != row["urgency"]
    ]
    assert 1 - len(misses) / len(results) >= 0.95, misses


def test_attachment_count(results):
    misses = [
        (row["file"], len(pm.attachment_files), row["attachments"])
        for row, pm in results
        if len(pm.attachment_files) != int(row["attachments"])
    ]
    assert not misses


def test_every_message_has_subject_and_sender(results):
    for row, pm in results:
        assert pm.subject, row["file"]
        assert pm.from_ and "@" in pm.from_[0].addr, row["file"]
        assert not [d for d in pm.defects if d.startswith("parser failure")], row["file"]
