"""Rules engine benchmark: evaluation time per message (parsing excluded) with the default rules
and with 1,000 generated rules, and parse throughput on the dev corpus.

    .venv/bin/python bench/rules_bench.py [CORPUS_DIR]
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "dev"

_WORDS = [
    "giấy mời", "báo cáo", "thông báo", "kế hoạch", "quyết định", "tờ trình", "dự thảo",
    "góp ý", "chuyển đổi số", "ngân sách", "biên bản", "hội nghị", "phiên họp", "thanh tra",
    "tuyển dụng", "cải cách hành chính", "an toàn thông tin", "đầu tư công", "giải ngân",
    "phòng chống", "thiên tai", "bão", "lũ", "y tế", "giáo dục", "nông nghiệp", "tài nguyên",
]  # fmt: skip
_FIELDS = ["subject", "body", "attachment.name", "from", "doc.symbol", "text"]
_CATS = ["meeting_invitation", "meeting_materials", "report", "announcement", "working_document"]


def generated_rules(n: int, seed: int = 15) -> str:
    """``n`` varied rules: keyword lists, regexes, globs, numeric and nested conditions."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 5
        w = rnd.sample(_WORDS, 3)
        f = rnd.choice(_FIELDS)
        if kind == 0:
            cond = f'{{ field = "{f}", contains = ["{w[0]}", "{w[1]}"] }}'
        elif kind == 1:
            cond = f"{{ field = \"{f}\", matches = '\\\\b{w[0]}\\\\b.{{0,40}}{w[1]}' }}"
        elif kind == 2:
            cond = (
                f'{{ all = [ {{ field = "subject", contains = "{w[0]}" }}, '
                f'{{ not = {{ field = "body", contains = "{w[1]}" }} }} ] }}'
            )
        elif kind == 3:
            cond = (
                f'{{ any = [ {{ field = "attachment.name", glob = "*{w[2]}*.pdf" }}, '
                f'{{ field = "attachment.size", gt = {rnd.randint(10_000, 10_000_000)} }} ] }}'
            )
        else:
            cond = (
                f'{{ all = [ {{ field = "doc.type", in = ["BC", "TB"] }}, '
                f'{{ field = "from", ends_with = "@s{i}.quangngai.gov.vn" }} ] }}'
            )
        then = f'category = "{rnd.choice(_CATS)}", tags = ["t{i}"]'
        out.append(f'[[rule]]\nname = "gen-{i}"\nwhen = {cond}\nthen = {{ {then} }}\n')
    return "\n".join(out)


def _time_eval(rules, contexts, rounds: int) -> tuple[float, float]:
    from mailgw.rules.evaluate import evaluate

    per_msg = []
    for _ in range(rounds):
        for ctx in contexts:
            t0 = time.perf_counter()
            evaluate(rules, ctx)
            per_msg.append(time.perf_counter() - t0)
    return statistics.median(per_msg) * 1e3, statistics.quantiles(per_msg, n=100)[98] * 1e3


def main() -> None:
    from mailgw.mime.parse import parse_message
    from mailgw.rules import default_rules, load_rules
    from mailgw.rules.commands import context_for_message

    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS
    files = sorted(corpus.glob("*.eml"))
    if not files:
        sys.exit(f"no .eml files in {corpus}")
    raws = [f.read_bytes() for f in files]
    total = sum(len(r) for r in raws)

    parse_message(raws[0])  # warm up (imports, extractor start-up)
    t0 = time.perf_counter()
    for r in raws:
        parse_message(r)
    dt = time.perf_counter() - t0
    print(f"parse: {len(raws)} messages, {total / 1024:.0f} KiB in {dt:.2f} s -> "
          f"{len(raws) / dt:.1f} msg/s, {total / 1024 / 1024 / dt:.2f} MiB/s")  # fmt: skip

    contexts = [context_for_message(r) for r in raws]
    from mailgw.rules.fields import norm_text

    t0 = time.perf_counter()
    for c in contexts:
        m = c.parsed
        for t in [m.subject, m.body_text, *(a.text for a in m.attachments)]:
            norm_text(t)
    fold_ms = (time.perf_counter() - t0) / len(contexts) * 1e3
    print(f"folding one message's texts (subject, body, attachments): {fold_ms:.3f} ms")
    default = default_rules()
    mean, p99 = _time_eval(default, contexts, rounds=20)
    print(f"evaluate, default rules ({len(default)} rules): median {mean:.3f} ms, p99 {p99:.3f} ms")

    t0 = time.perf_counter()
    big = load_rules(generated_rules(1000), "<generated>")
    load_ms = (time.perf_counter() - t0) * 1e3
    mean, p99 = _time_eval(big, contexts, rounds=5)
    print(f"load 1,000 generated rules: {load_ms:.0f} ms")
    print(f"evaluate, 1,000 generated rules: median {mean:.3f} ms, p99 {p99:.3f} ms per message")


if __name__ == "__main__":
    main()
