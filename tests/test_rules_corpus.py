"""Category accuracy of the default rules on the labelled dev corpus (>= 95 %)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mailgw.rules import default_rules, evaluate
from mailgw.rules.commands import context_for_message

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "dev"


@pytest.mark.skipif(not (CORPUS / "labels.csv").exists(), reason="dev corpus not available")
def test_default_rules_category_accuracy() -> None:
    with open(CORPUS / "labels.csv", encoding="utf-8", newline="") as f:
        labels = {row["file"]: row["category"] for row in csv.DictReader(f)}
    rules = default_rules()
    misses = []
    for name, expected in sorted(labels.items()):
        d = evaluate(rules, context_for_message((CORPUS / name).read_bytes()))
        if d.category != expected:
            misses.append(f"{name}: got {d.category} (rule {d.category_rule}), want {expected}")
    accuracy = 1 - len(misses) / len(labels)
    assert accuracy >= 0.95, "\n".join(misses)
