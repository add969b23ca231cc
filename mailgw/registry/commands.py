"""CLI: ``mailgw register verify|head|export|correct`` and ``mailgw archive verify|prune``.

The main CLI calls :func:`add_commands` with its subparsers, then ``args.func(args)``, which
returns the exit status.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from mailgw.mime.model import CONFIDENTIALITY_LEVELS, URGENCY_LEVELS
from mailgw.registry.blobs import FileBlobStore


def add_commands(subparsers: Any, common: argparse.ArgumentParser | None = None) -> None:
    if common is None:
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument("-c", "--config", metavar="FILE", help="configuration file")
    parents = [common]

    reg = subparsers.add_parser("register", help="the document register (sổ văn bản đến)")
    rsub = reg.add_subparsers(dest="register_cmd", required=True)

    p = rsub.add_parser("verify", parents=parents, help="check hash chains, numbers and blobs")
    p.add_argument("--register", help="one register (default: all)")
    p.add_argument("--no-blobs", action="store_true", help="do not re-hash the blobs")
    p.add_argument(
        "--anchor", type=Path, metavar="FILE",
        help="also check the heads kept in FILE (lines printed by `register head`)",
    )  # fmt: skip
    p.set_defaults(func=cmd_register_verify)

    p = rsub.add_parser(
        "head", parents=parents, help="print each register's chain head, to keep elsewhere"
    )
    p.add_argument("--register", help="one register (default: all)")
    p.set_defaults(func=cmd_register_head)

    p = rsub.add_parser("export", parents=parents, help="print the register (CSV or HTML)")
    p.add_argument("--register", default="default")
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--from", dest="date_from", type=dt.date.fromisoformat, metavar="DATE")
    p.add_argument("--to", dest="date_to", type=dt.date.fromisoformat, metavar="DATE")
    p.add_argument("--format", choices=("csv", "html"), default="csv")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    p.set_defaults(func=cmd_register_export)

    p = rsub.add_parser(
        "correct", parents=parents, help="append a correction of an entry (never edits it)"
    )
    p.add_argument("--register", default="default")
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--number", type=int, required=True)
    p.add_argument("--reason", required=True, help="why (kept in the notes)")
    for name in ("issuer", "doc-symbol", "doc-type", "doc-type-name", "summary", "unit", "notes"):
        p.add_argument(f"--{name}")
    p.add_argument("--doc-date", type=dt.date.fromisoformat, metavar="DATE")
    p.add_argument("--urgency", choices=URGENCY_LEVELS)
    p.add_argument("--confidentiality", choices=(*CONFIDENTIALITY_LEVELS, "none"))
    p.set_defaults(func=cmd_register_correct)

    arch = subparsers.add_parser("archive", help="the archive of registered files")
    asub = arch.add_subparsers(dest="archive_cmd", required=True)
    p = asub.add_parser("verify", parents=parents, help="re-hash every blob; report bad ones")
    p.set_defaults(func=cmd_archive_verify)
    p = asub.add_parser(
        "prune", parents=parents, help="remove raw messages past storage.retention_days"
    )
    p.add_argument("--dry-run", action="store_true", help="count what would go; change nothing")
    p.add_argument("--days", type=_days, metavar="N", help="retention in days (overrides config)")
    p.set_defaults(func=cmd_archive_prune)


def _days(value: str) -> int:
    days = int(value)
    if days < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return days


def _run(args: argparse.Namespace, work: Callable[[Session, Any], int]) -> int:
    from mailgw.app import open_database  # the CLI edge: config and database
    from mailgw.config import load_config
    from mailgw.db.engine import make_sessionmaker

    config = load_config(args.config)
    engine = open_database(config)
    try:
        with make_sessionmaker(engine)() as session, session.begin():
            return work(session, config)
    finally:
        engine.dispose()


def cmd_register_verify(args: argparse.Namespace) -> int:
    from mailgw.registry.anchor import AnchorError, parse_anchors
    from mailgw.registry.audit import verify_registers

    anchors = []
    if args.anchor:
        try:
            anchors = parse_anchors(args.anchor.read_text(encoding="utf-8"), str(args.anchor))
        except (OSError, UnicodeDecodeError, AnchorError) as exc:
            print(f"mailgw: {exc}", file=sys.stderr)
            return 2

    def work(session: Session, config: Any) -> int:
        store = None if args.no_blobs else FileBlobStore.in_data_dir(config.storage.data_dir)
        names = [args.register] if args.register else None
        reports = verify_registers(session, store, names, anchors)
        for report in reports:
            notes = ""
            if report.purged_raw:
                notes += f"; {len(report.purged_raw)} raw message blob(s) removed by retention"
            if report.anchors:
                notes += f"; {report.anchors} anchor(s) checked"
            if report.ok:
                print(f"{report.register}: {report.entries} entries, chain and numbers OK{notes}")
                continue
            print(f"{report.register}: {report.entries} entries, FAILED{notes}")
            print(f"  first problem: {report.first}")
            for problem in report.problems[1:]:
                print(f"  also: {problem}")
        if not reports:
            print("no register has entries yet")
        return 0 if all(r.ok for r in reports) else 1

    return _run(args, work)


def cmd_register_head(args: argparse.Namespace) -> int:
    from mailgw.registry.anchor import HEADER, head_line
    from mailgw.registry.audit import entry_at, register_heads

    def work(session: Session, config: Any) -> int:
        heads = register_heads(session, [args.register] if args.register else None)
        if not heads:
            print(f"mailgw: no register {args.register}" if args.register
                  else "mailgw: no register has entries yet", file=sys.stderr)  # fmt: skip
            return 1
        now = dt.datetime.now(ZoneInfo(config.registry.timezone))
        print(HEADER)
        status = 0
        for head in heads:
            last = entry_at(session, head.register, head.last_seq) if head.last_seq else None
            if head.last_seq and (last is None or last.entry_hash != head.last_hash):
                problem = f"the head row does not match chain position {head.last_seq}"
                print(f"mailgw: {head.register}: {problem}: run `mailgw register verify`",
                      file=sys.stderr)  # fmt: skip
                status = 1
                continue
            print(head_line(head.register, head.last_seq, head.last_hash, now))
        return status

    return _run(args, work)


def cmd_register_export(args: argparse.Namespace) -> int:
    from mailgw.registry.export import register_lines, to_csv, to_html

    def work(session: Session, config: Any) -> int:
        lines = register_lines(
            session, args.register, args.year, args.date_from, args.date_to,
            config.registry.timezone,
        )  # fmt: skip
        if args.format == "csv":
            text = to_csv(lines)
        else:
            text = to_html(lines, args.register, args.year, args.date_from, args.date_to)
        if args.output:
            args.output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        print(f"-- {len(lines)} entr{'y' if len(lines) == 1 else 'ies'}", file=sys.stderr)
        return 0

    return _run(args, work)


def cmd_register_correct(args: argparse.Namespace) -> int:
    from mailgw.registry.register import CorrectionError, correct_entry

    changes: dict[str, Any] = {}
    for key in ("issuer", "doc_symbol", "doc_type", "doc_type_name", "summary", "unit", "notes",
                "doc_date", "urgency", "confidentiality"):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            changes[key] = None if value == "none" else value
    if not changes:
        print("mailgw: nothing to correct (give --summary, --doc-symbol, …)", file=sys.stderr)
        return 2

    def work(session: Session, config: Any) -> int:
        try:
            entry = correct_entry(
                session, args.register, args.year, args.number, changes, args.reason
            )
        except CorrectionError as exc:
            print(f"mailgw: {exc}", file=sys.stderr)
            return 1
        print(f"{entry.register} {entry.year}/{entry.number}: revision {entry.revision} added")
        return 0

    return _run(args, work)


def cmd_archive_verify(args: argparse.Namespace) -> int:
    from mailgw.registry.audit import verify_archive

    def work(session: Session, config: Any) -> int:
        report = verify_archive(session, FileBlobStore.in_data_dir(config.storage.data_dir))
        for status in report.problems:
            print(f"{status.state}: {status.sha256} {status.detail}")
        line = f"{report.checked} blob(s) checked, {len(report.problems)} problem(s)"
        if report.purged:
            line += f", {report.purged} raw message blob(s) removed by retention"
        print(line)
        return 0 if report.ok else 1

    return _run(args, work)


def cmd_archive_prune(args: argparse.Namespace) -> int:
    from mailgw.app import open_database
    from mailgw.config import load_config
    from mailgw.db.engine import make_sessionmaker
    from mailgw.retention import prune

    config = load_config(args.config)
    days = config.storage.retention_days if args.days is None else args.days
    if days == 0:
        source = "storage.retention_days = 0" if args.days is None else "--days 0"
        print(f"retention is off ({source}): nothing pruned")
        return 0
    engine = open_database(config)
    try:
        data_dir = config.storage.data_dir
        result = prune(make_sessionmaker(engine), data_dir, FileBlobStore.in_data_dir(data_dir),
                       days, dry_run=args.dry_run)  # fmt: skip
    finally:
        engine.dispose()
    before = result.cutoff.astimezone(ZoneInfo(config.registry.timezone)).isoformat("T", "seconds")
    print(f"retention {days} days: finished messages that arrived before {before}")
    what = (f"{result.spool_files} spool file(s) and {result.raw_blobs} raw blob(s) of "
            f"{result.messages} message(s)")  # fmt: skip
    if args.dry_run:
        print(f"dry run: would remove {what}, freeing {result.bytes_freed} bytes; nothing changed")
    else:
        print(f"removed {what}, {result.bytes_freed} bytes freed")
    if result.failed:
        print(f"{result.failed} file(s) could not be removed (see the log); tried again next run")
        return 1
    return 0
