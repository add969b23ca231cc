"""``mailgw keys import|list|remove|trust``: the OpenPGP keys the gateway verifies against.

The main CLI calls :func:`add_commands` with its subparsers (and its ``common`` parent parser
with ``-c/--config``); each command sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mailgw.keys import TRUST_LEVELS, Keyring, KeyringError


def add_commands(subparsers: Any, common: argparse.ArgumentParser | None = None) -> None:
    """Register ``keys`` and its sub-commands on argparse subparsers."""
    parents = [common] if common is not None else []
    keys = subparsers.add_parser("keys", help="OpenPGP keys for signature checks")
    ksub = keys.add_subparsers(dest="keys_command", metavar="{import,list,remove,trust}")
    ksub.required = True

    def command(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = ksub.add_parser(name, help=help, parents=parents)
        if common is None:
            p.add_argument("-c", "--config", metavar="FILE", help="configuration file")
        p.set_defaults(func=func)
        return p

    p = command("import", cmd_import, "import public keys (armored or binary; - for stdin)")
    p.add_argument("file", help="key file, or - to read standard input")
    p.add_argument(
        "--trust", choices=TRUST_LEVELS, default="full",
        help="owner trust given to the imported keys (default: full)",
    )  # fmt: skip
    p = command("list", cmd_list, "list the keys")
    p.add_argument("--json", action="store_true", help="one JSON object per key")
    command("remove", cmd_remove, "remove a key").add_argument("fingerprint")
    p = command("trust", cmd_trust, "set the owner trust of a key")
    p.add_argument("fingerprint")
    p.add_argument("level", choices=TRUST_LEVELS)


def keyring_for(args: argparse.Namespace) -> Keyring:
    from mailgw.config import load_config

    config = load_config(getattr(args, "config", None))
    return Keyring.for_data_dir(config.storage.data_dir)


def _run(args: argparse.Namespace, work: Any) -> int:
    keyring = keyring_for(args)
    try:
        return int(work(keyring))
    except KeyringError as exc:
        print(f"mailgw: {exc}", file=sys.stderr)
        return 1
    finally:
        keyring.close()


def cmd_import(args: argparse.Namespace) -> int:
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"mailgw: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1

    def work(keyring: Keyring) -> int:
        fingerprints = keyring.import_keys(data, trust=args.trust)
        for fpr in fingerprints:
            key = keyring.get_key(fpr)
            print(f"imported {fpr}  {key.uid if key else ''}  trust={args.trust}")
        if not fingerprints:
            print("imported: revocations or updates only")
        return 0

    return _run(args, work)


def _state(revoked: bool, expired: bool) -> str:
    return "revoked" if revoked else "expired" if expired else "valid"


def cmd_list(args: argparse.Namespace) -> int:
    def work(keyring: Keyring) -> int:
        keys = keyring.list_keys()
        for key in keys:
            if args.json:
                print(json.dumps(key.to_dict(), ensure_ascii=False))
                continue
            state = _state(key.revoked, key.expired)
            print(f"{key.fingerprint}  {key.trust:9} {state:8} {key.uid or ''}")
            for uid in key.uids[1:]:
                print(f"{'':60}{uid}")
        print(f"-- {len(keys)} key(s)", file=sys.stderr)
        return 0

    return _run(args, work)


def cmd_remove(args: argparse.Namespace) -> int:
    def work(keyring: Keyring) -> int:
        keyring.remove(args.fingerprint)
        print(f"removed {args.fingerprint}")
        return 0

    return _run(args, work)


def cmd_trust(args: argparse.Namespace) -> int:
    def work(keyring: Keyring) -> int:
        keyring.set_trust(args.fingerprint, args.level)
        print(f"{args.fingerprint}: trust {args.level}")
        return 0

    return _run(args, work)
