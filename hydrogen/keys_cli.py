"""``hydrogen keys list | add | revoke | rotate``: the key store from the command line.

Works on the state dir of a running gateway (the store's file lock and atomic
replace make concurrent edits safe; the gateway notices within a second and closes
the connections of a revoked or rotated key). A new secret is printed once, on
stdout, and is kept nowhere but in the caller's hands.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time

from hydrogen.audit import inbox
from hydrogen.audit.record import AuditRecord
from hydrogen.config import Config, ConfigError, load_config
from hydrogen.keystore import KeyStore, KeyStoreError, StoredKey
from hydrogen.protocol import Role


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="list, add, revoke or rotate stored API keys")
    keys.add_argument("--config", metavar="PATH", help="TOML config file (for its state_dir)")
    keys.add_argument("--state-dir", metavar="DIR", help="the gateway's state dir")
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every key (never a secret)")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    add = actions.add_parser("add", help="make a key and print its secret once")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["monitor", "control", "admin"])
    add.add_argument(
        "--printer",
        action="append",
        default=None,
        metavar="NAME",
        help="a printer the key may see and act on (repeatable; default: all)",
    )
    revoke = actions.add_parser("revoke", help="delete a key; its connections close at once")
    revoke.add_argument("name")
    rotate = actions.add_parser("rotate", help="a new secret for a key; the old one stops")
    rotate.add_argument("name")
    keys.set_defaults(func=cmd_keys)


def cmd_keys(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, overrides={"state_dir": args.state_dir})
    except ConfigError as exc:
        print(f"hydrogen: config error: {exc}", file=sys.stderr)
        return 2
    store = KeyStore(config.state_dir)
    try:
        return _run(args, config, store)
    except KeyStoreError as exc:
        print(f"hydrogen: {exc.message}", file=sys.stderr)
        return 1 if exc.kind in ("exists", "not_found", "invalid") else 2
    except OSError as exc:
        print(f"hydrogen: cannot use {config.state_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, config: Config, store: KeyStore) -> int:
    if args.action == "list":
        return _list(config, store, as_json=args.json)
    if args.action == "add":
        printers = args.printer
        known = {p.name for p in config.printers}
        if printers is not None and known:
            unknown = [p for p in printers if p not in known]
            if unknown:
                print(f"hydrogen: no printer named {unknown[0]!r}", file=sys.stderr)
                return 1
        entry, secret = store.add(
            args.name,
            Role.parse(args.role),
            printers,
            reserved={k.name for k in config.keys},
        )
        _shown_once(entry, secret, "added")
        _audit(config, "key_add", entry.name)
        return 0
    if args.name in {k.name for k in config.keys}:
        print(
            f"hydrogen: {args.name!r} is a key from the configuration; change it there",
            file=sys.stderr,
        )
        return 1
    if args.action == "revoke":
        entry = store.revoke(args.name)
        print(f"revoked {entry.name!r}; its connections, tokens and sessions end now")
        _audit(config, "key_revoke", entry.name)
        return 0
    entry, secret = store.rotate(args.name)
    _shown_once(entry, secret, "rotated")
    _audit(config, "key_rotate", entry.name)
    return 0


def _audit(config: Config, action: str, name: str) -> None:
    """The change, for the gateway's audit trail: done by this machine's user, as an
    administrator (whoever can write the state dir is one)."""
    record = AuditRecord(
        time=time.time(),
        identity=f"cli:{getpass.getuser()}",
        role=Role.ADMIN.label,
        transport="cli",
        action=action,
        target=name,
    )
    try:
        inbox.post(config.state_dir, record)
    except OSError as exc:
        print(f"hydrogen: the change is made but not audited: {exc}", file=sys.stderr)


def _shown_once(entry: StoredKey, secret: str, done: str) -> None:
    scope = ", ".join(sorted(entry.printers)) if entry.printers is not None else "all printers"
    print(
        f"{done} key {entry.name!r} (role {entry.role.label}, {scope}); its secret, shown"
        " only this once:",
        file=sys.stderr,
    )
    print(secret, flush=True)


def _list(config: Config, store: KeyStore, *, as_json: bool) -> int:
    rows = [
        {
            "name": k.name,
            "role": k.role.label,
            "printers": sorted(k.printers) if k.printers is not None else None,
            "source": "config",
            "created_at": None,
            "rotated_at": None,
        }
        for k in config.keys
    ]
    reserved = {k.name for k in config.keys}
    rows += [
        {
            "name": k.name,
            "role": k.role.label,
            "printers": sorted(k.printers) if k.printers is not None else None,
            "source": "store" if k.name not in reserved else "store (ignored: name in config)",
            "created_at": k.created_at,
            "rotated_at": k.rotated_at,
        }
        for k in store.load()
    ]
    if as_json:
        print(json.dumps({"keys": rows}, indent=1))
        return 0
    if not rows:
        print("no keys (the gateway generates one in the state dir on its first start)")
        return 0
    table = [("NAME", "ROLE", "PRINTERS", "SOURCE", "CREATED")]
    for row in rows:
        created = row["created_at"]
        table.append(
            (
                str(row["name"]),
                str(row["role"]),
                ",".join(row["printers"]) if row["printers"] is not None else "*",  # type: ignore[arg-type]
                str(row["source"]),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "-",  # type: ignore[arg-type]
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0
