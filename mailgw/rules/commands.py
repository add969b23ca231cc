"""Command-line subcommands: ``mailgw rules check``, ``mailgw rules test``, ``mailgw classify``.

The main CLI calls :func:`add_commands` with its subparsers and then ``args.func(args)``, which
returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mailgw.rules.context import MessageContext
from mailgw.rules.evaluate import Decision, evaluate
from mailgw.rules.loader import default_rules, load_rules_file
from mailgw.rules.problems import RulesError
from mailgw.rules.ruleset import RuleSet


def add_commands(subparsers: Any) -> None:
    """Register ``rules check``, ``rules test`` and ``classify`` on argparse subparsers."""
    rules = subparsers.add_parser("rules", help="check and try rules files")
    rsub = rules.add_subparsers(dest="rules_command", metavar="{check,test}")
    rsub.required = True

    check = rsub.add_parser("check", help="validate a rules file; print FILE:LINE:COL: problems")
    check.add_argument("file", type=Path, help="rules file (TOML)")
    check.set_defaults(func=cmd_check)

    test = rsub.add_parser("test", help="show the decision for one message, rule by rule")
    test.add_argument("message", type=Path, help="message file (.eml)")
    test.add_argument("--rules", type=Path, help="rules file (default: the built-in rules)")
    test.add_argument("--matched", action="store_true", help="show only the rules that matched")
    test.add_argument("--json", action="store_true", help="print the decision as JSON")
    test.set_defaults(func=cmd_test)

    classify = subparsers.add_parser("classify", help="classify .eml files (or folders of them)")
    classify.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=".eml file or folder")
    classify.add_argument("--rules", type=Path, help="rules file (default: the built-in rules)")
    classify.add_argument("--json", action="store_true", help="one JSON object per line")
    classify.set_defaults(func=cmd_classify)


# -- helpers ------------------------------------------------------------------------------------


def context_for_message(raw: bytes) -> MessageContext:
    """A context for a message read from a file: envelope taken from its From/To/Cc headers."""
    from mailgw.mime.parse import parse_message

    parsed = parse_message(raw)
    sender = parsed.from_[0].addr if parsed.from_ else ""
    rcpts = [a.addr for a in [*parsed.to, *parsed.cc]]
    return MessageContext(parsed=parsed, mail_from=sender, rcpt_to=rcpts, listener="file")


def _rules(path: Path | None) -> RuleSet | None:
    if path is None:
        return default_rules()
    try:
        return load_rules_file(path)
    except RulesError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        return None


def _eml_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() == ".eml" and q.is_file()))
        else:
            out.append(p)
    return out


def summary(name: str, ctx: MessageContext, d: Decision) -> dict[str, Any]:
    """The per-message record printed by ``classify --json``."""
    m = ctx.parsed
    f = m.facts
    return {
        "file": name,
        "category": d.category,
        "doc_symbol": f.symbol,
        "doc_type": f.doc_type,
        "doc_date": f.doc_date.isoformat() if f.doc_date else None,
        "urgency": f.urgency,
        "confidentiality": f.confidentiality,
        "attachments": sum(1 for a in m.attachments if getattr(a, "is_file", not a.inline)),
        "matched_rules": list(d.matched_rules),
        "category_rule": d.category_rule,
        "tags": list(d.tags),
        "registers": d.registers,
        "hold": d.hold.reason if d.hold else None,
        "bounce": d.bounce.reason if d.bounce else None,
    }


# -- commands -----------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    try:
        rules = load_rules_file(args.file)
    except RulesError as e:
        for p in e.problems:
            print(p)
        n = len(e.problems)
        print(f"{args.file}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK, {len(rules)} rules, version {rules.version[:12]}")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    rules = _rules(args.rules)
    if rules is None:
        return 2
    try:
        raw = args.message.read_bytes()
    except OSError as e:
        print(f"{args.message}: {e.strerror or e}", file=sys.stderr)
        return 2
    ctx = context_for_message(raw)
    d = evaluate(rules, ctx)
    if args.json:
        print(json.dumps(d.to_dict(), ensure_ascii=False, indent=2))
        return 0
    f = ctx.parsed.facts
    print(f"message: {args.message}")
    print(f"subject: {ctx.parsed.subject}")
    print(
        f"document: symbol={f.symbol or '-'} type={f.doc_type or '-'} "
        f"date={f.doc_date or '-'} urgency={f.urgency} confidentiality={f.confidentiality or '-'}"
    )
    print(f"rules: {rules.source} ({len(rules)} rules, version {rules.version[:12]})")
    print()
    print(d.explain(all_rules=not args.matched))
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    rules = _rules(args.rules)
    if rules is None:
        return 2
    status = 0
    for path in _eml_files(args.paths):
        try:
            raw = path.read_bytes()
        except OSError as e:
            print(f"{path}: {e.strerror or e}", file=sys.stderr)
            status = 1
            continue
        ctx = context_for_message(raw)
        d = evaluate(rules, ctx)
        rec = summary(path.name, ctx, d)
        if args.json:
            print(json.dumps(rec, ensure_ascii=False))
        else:
            print(
                f"{rec['file']}\t{rec['category']}\t{rec['doc_symbol'] or '-'}\t"
                f"{','.join(rec['matched_rules'])}"
            )
    return status
