"""CLI: ``mailgw register verify|export|correct`` and ``mailgw archive verify``.

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
    p.set_defaults(func=cmd_register_verify)

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
    from mailgw.registry.audit import verify_registers

    def work(session: Session, config: Any) -> int:
        store = None if args.no_blobs else FileBlobStore.in_data_dir(config.storage.data_dir)
        names = [args.register] if args.register else None
        reports = verify_registers(session, store, names)
        for report in reports:
            if report.ok:
                print(f"{report.register}: {report.entries} entries, chain and numbers OK")
                continue
            print(f"{report.register}: {report.entries} entries, FAILED")
            print(f"  first problem: {report.first}")
            for problem in report.problems[1:]:
                print(f"  also: {problem}")
        if not reports:
            print("no register has entries yet")
        return 0 if all(r.ok for r in reports) else 1

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
        checked, problems = verify_archive(
            session, FileBlobStore.in_data_dir(config.storage.data_dir)
        )
        for status in problems:
            print(f"{status.state}: {status.sha256} {status.detail}")
        print(f"{checked} blob(s) checked, {len(problems)} problem(s)")
        return 0 if not problems else 1

    return _run(args, work)
