"""The ``cryptostack`` command line: ``daemon``, ``status``, ``health``, ``explain``,
``algorithms``, ``check``, ``keystore backup|verify|migrate|repair|reset``.

Exit status: 0 success; 1 failure (unreachable daemon, unhealthy provider, error);
2 the daemon cannot start with this configuration (bad config, a required provider that
cannot start, root without ``allow_root``) or ``check`` found a problem."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from cryptostack_core.server.config import ConfigError, DaemonConfig
from cryptostack_core.wire.errors import CryptoError
from cryptostack_core.wire.resources import ResourceType

DEFAULT_ENDPOINT = os.environ.get("CRYPTOSTACK_ENDPOINT", "unix:///run/cryptostack/daemon.sock")


def _stack(endpoint: str) -> Any:
    from cryptostack_core.client.stack import CryptoStackConfig, create_crypto_stack

    return create_crypto_stack(CryptoStackConfig().set_connection_endpoint(endpoint)
                               .set_default_operation_timeout(10))


def cmd_daemon(args: argparse.Namespace) -> int:
    from cryptostack_core.server.daemon import DaemonStartError, run_daemon
    from cryptostack_core.server.discovery import ProviderStartError

    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = DaemonConfig.load(args.config)
        run_daemon(config)
    except ConfigError as exc:
        print(f"cryptostack: bad configuration: {exc}", file=sys.stderr)
        return 2
    except (DaemonStartError, ProviderStartError) as exc:
        print(f"cryptostack: cannot start: {exc}", file=sys.stderr)
        return 2
    except CryptoError as exc:
        print(f"cryptostack: cannot start: {exc}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error) as exc:  # unwritable key store or socket directory ...
        print(f"cryptostack: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_status(status: dict[str, Any]) -> None:
    print(f"cryptostack daemon {status['version']} (pid {status['pid']}, "
          f"up {status['uptime']:.0f} s)")
    print("providers:")
    for p in status["providers"]:
        reason = f" — {p['reason']}" if p.get("reason") else ""
        print(f"  {p['id']:>3}  {p['name']:<10} {p['state']}{reason}")
    print("key slots:")
    for s in status["key_slots"]:
        print(f"  {s['name']:<24} {s['status']:<9} {s['algorithm'] or '-':<12} "
              f"provider {s['provider']}  v{s['version']}")
    if status.get("cert_slots"):
        print("certificate slots:")
        for c in status["cert_slots"]:
            print(f"  {c['name']:<24} {'OCCUPIED' if c['occupied'] else 'EMPTY':<9} {c['subject']}")
    if status.get("trust_stores"):
        print("trust stores: " + ", ".join(status["trust_stores"]))
    for warning in status.get("warnings", []):
        print(f"WARNING: {warning}")
    print(f"clients ({len(status['clients'])}):")
    for c in status["clients"]:
        print(f"  pid {c['pid']:>7}  uid {c['uid']:>5}  contexts {c['contexts']:>4}  "
              f"resources {c['resources']:>4}")


def cmd_status(args: argparse.Namespace) -> int:
    with _stack(args.endpoint) as stack:
        status = stack.status()
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        _print_status(status)
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """0 when every required provider is up; 1 otherwise (or when the daemon is unreachable)."""
    with _stack(args.endpoint) as stack:
        status = stack.status()
    down = [p for p in status["providers"]
            if p["state"] == "unavailable" and not p.get("optional")]
    for p in status["providers"]:
        mark = "DOWN" if p in down else p["state"]
        note = " (optional)" if p.get("optional") else ""
        reason = f": {p['reason']}" if p.get("reason") else ""
        print(f"{p['name']} ({p['id']}){note}: {mark}{reason}")
    for warning in status.get("warnings", []):
        print(f"WARNING: {warning}")
    print("unhealthy: a required provider is down" if down else "healthy")
    return 1 if down else 0


def cmd_check(args: argparse.Namespace) -> int:
    from cryptostack_core.server.check import check_config

    report = check_config(Path(args.config))
    for fact in report.facts:
        print(fact)
    for warning in report.warnings:
        print(f"WARNING: {warning}")
    for problem in report.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    print(f"{args.config}: " + ("OK" if report.ok else
                                f"{len(report.problems)} problem(s); the daemon would not start"))
    return 0 if report.ok else 2


def cmd_keystore_backup(args: argparse.Namespace) -> int:
    from cryptostack_core.server import paths
    from cryptostack_core.server.backup import backup_store

    if args.keystore:
        store = Path(args.keystore)
        kek = None
    else:
        try:
            config = paths.daemon_defaults(DaemonConfig.load(args.config))
        except ConfigError as exc:
            print(f"cryptostack: bad configuration: {exc}", file=sys.stderr)
            return 2
        if paths.in_memory(config) or config.keystore is None:
            print("cryptostack: this configuration keeps its keys in memory: nothing to back up",
                  file=sys.stderr)
            return 1
        store = config.keystore
        kek = paths.kek_location(config)[0]
    try:
        result = backup_store(store, Path(args.output))
    except (OSError, sqlite3.Error) as exc:
        print(f"cryptostack: backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {store} to {result.path} ({result.size} bytes: {result.key_slots} key "
          f"slots, {result.cert_slots} certificate slots, {result.trust_stores} trust stores)")
    print("the key-encryption key is NOT in this backup: back it up separately"
          + (f" ({kek})" if kek is not None else "") + "; see docs/operations.md")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:

    with _stack(args.endpoint) as stack:
        key = None
        if args.key_slot:
            key = stack.create_crypto_context().resolve_resource(args.key_slot,
                                                                 ResourceType.KEY_SLOT)
        candidates = stack.explain(args.algorithm, args.operation, key=key, provider=args.provider)
    if args.json:
        print(json.dumps(candidates, indent=2))
        return 0
    print(f"{args.algorithm} / {args.operation}" + (f" with slot {args.key_slot}" if key else ""))
    for c in candidates:
        mark = "->" if c["taken"] else "  "
        print(f" {mark} {c['provider']:>3} {c['name']:<10} {c['reason']}")
    if not any(c["taken"] for c in candidates):
        print(" no compatible provider")
        return 1
    return 0


def _algorithm_rows(table: list[dict[str, Any]], names: dict[int, str]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for entry in table:
        if entry["key_algorithms"]:
            keys = ", ".join(entry["key_algorithms"])
        elif entry.get("key_class"):
            keys = f"(a {entry['key_class']} key type)"
        else:
            keys = "-"
        ops = "; ".join(f"{op}: " + ", ".join(f"{names.get(pid, '?')} ({pid})" for pid in pids)
                        for op, pids in sorted(entry["providers"].items())) or "no provider"
        rows.append((entry["name"], entry["kind"], keys, ops))
    return rows


def cmd_algorithms(args: argparse.Namespace) -> int:
    with _stack(args.endpoint) as stack:
        table = stack.algorithms()
        names = {p["id"]: p["name"] for p in stack.status()["providers"]}
    if args.json:
        print(json.dumps(table, indent=2, sort_keys=True))
        return 0
    rows = _algorithm_rows(table, names)
    widths = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
    header = ("algorithm", "kind", "key types", "providers, by operation")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)) + header[3])
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + row[3])
    return 0


def _with_keystore(args: argparse.Namespace, action: Any) -> int:
    """Run ``action(path, kek_source, kek_path)`` for the configured key store."""
    from cryptostack_core.server import paths

    config = paths.daemon_defaults(DaemonConfig.load(args.config))
    if paths.in_memory(config) or config.keystore is None:
        print(f"cryptostack: {args.config}: this configuration keeps its keys in memory",
              file=sys.stderr)
        return 2
    kek = paths.kek_location(config)[0]
    loaded = None
    source = None
    if config.kek_provider is not None:  # the KEK is sealed by a provider (TPM)
        from cryptostack_core.server.discovery import load_provider

        entry = next(p for p in config.providers if p.id == config.kek_provider)
        root = config.state_dir or config.keystore.parent
        loaded = load_provider(entry, root, Path(config.source).resolve().parent,
                               allow_test_providers=config.allow_test_providers)
        source = loaded.instance.kek_source() if loaded.instance is not None else None
        if source is None:
            print(f"cryptostack: kek_provider {entry.name} ({entry.id}) is unavailable: "
                  f"{loaded.load_error}", file=sys.stderr)
            return 1
    try:
        return int(action(config.keystore, source, kek))
    finally:
        if loaded is not None and loaded.instance is not None:
            loaded.instance.close()


def cmd_keystore(args: argparse.Namespace) -> int:
    from cryptostack_core.server import keystore as ks

    def verify(path: Any, source: Any, kek: Any) -> int:
        store = ks.KeyStore.open_unverified(path, source, kek)
        try:
            problems = store.verify()
        finally:
            store.close()
        for problem in problems:
            print(f"  {problem}")
        print(f"key store {path}: " + (f"{len(problems)} problem(s); the daemon will not start "
                                       "on it" if problems else "intact"))
        return 1 if problems else 0

    def migrate(path: Any, source: Any, kek: Any) -> int:
        backup, converted, dropped = ks.migrate_v1(path, source, kek,
                                                   drop_invalid=args.drop_invalid)
        print(f"key store {path}: converted to schema {ks.SCHEMA_VERSION}; the schema-1 file is "
              f"kept as {backup}")
        print("Schema 1 did not authenticate these rows' metadata; they are now sealed as they "
              "are. Review them:")
        for line in converted:
            print(f"  {line}")
        for line in dropped:
            print(f"  DROPPED {line}")
        return 0

    def repair(path: Any, source: Any, kek: Any) -> int:
        store = ks.KeyStore.open_unverified(path, source, kek)
        try:
            if not args.yes:
                problems = store.verify()
                for problem in problems:
                    print(f"  would drop: {problem}")
                print("nothing to repair" if not problems else
                      "rerun with --yes to drop these rows (their keys are lost)")
                return 0 if not problems else 1
            for problem in store.repair():
                print(f"  dropped: {problem}")
        finally:
            store.close()
        print(f"key store {path}: re-sealed")
        return 0

    def reset(path: Any, source: Any, kek: Any) -> int:
        if not args.yes:
            print(f"this sets {path} and its KEK aside (renamed, not deleted): the daemon then "
                  "starts with an empty store and provisions new keys. Rerun with --yes.")
            return 1
        for moved in ks.set_aside(path, kek):
            print(f"  set aside: {moved}")
        return 0

    return _with_keystore(args, {"verify": verify, "migrate": migrate, "repair": repair,
                                 "reset": reset}[args.action])


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the command line."""
    parser = argparse.ArgumentParser(prog="cryptostack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("daemon", help="run the daemon in the foreground")
    d.add_argument("--config", required=True, help="TOML configuration file")
    d.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    d.set_defaults(func=cmd_daemon)
    s = sub.add_parser("status", help="providers, slots and clients of a running daemon")
    s.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    h = sub.add_parser("health", help="exit 0 when every required provider is up, else 1")
    h.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    h.set_defaults(func=cmd_health)
    c = sub.add_parser("check", help="validate a daemon configuration without starting it")
    c.add_argument("--config", required=True, help="TOML configuration file")
    c.set_defaults(func=cmd_check)
    k = sub.add_parser("keystore", help="key store maintenance")
    ksub = k.add_subparsers(dest="keystore_command", required=True)
    b = ksub.add_parser("backup", help="online backup of the key store (not the KEK)")
    where = b.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the daemon's configuration (finds its key store)")
    where.add_argument("--keystore", help="the key store file")
    b.add_argument("output", help="backup file to create (never overwritten)")
    b.set_defaults(func=cmd_keystore_backup)
    for action, text in (("verify", "check every row, the manifest and the KEK (exit 1 if not "
                                    "intact)"),
                         ("migrate", "convert a schema-1 store (cryptostack 0.1), keeping a copy"),
                         ("repair", "drop rows that fail authentication, re-seal the rest"),
                         ("reset", "set the store and its KEK aside; the next start is empty")):
        r = ksub.add_parser(action, help=f"{text} (docs/security.md)")
        r.add_argument("--config", required=True, help="the daemon's TOML configuration file")
        if action in ("repair", "reset"):
            r.add_argument("--yes", action="store_true", help=f"really {action}")
        if action == "migrate":
            r.add_argument("--drop-invalid", action="store_true",
                           help="convert even if some schema-1 rows do not unwrap")
        r.set_defaults(func=cmd_keystore, action=action)
    e = sub.add_parser("explain", help="which provider would run an operation, and why")
    e.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    e.add_argument("--algorithm", required=True)
    e.add_argument("--operation", required=True,
                   help="hash, encrypt, decrypt, sign, verify, encapsulate, agree, derive, ...")
    e.add_argument("--key-slot", help="explain for the key in this slot")
    e.add_argument("--provider", type=int, help="pin a provider id")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_explain)
    a = sub.add_parser("algorithms", help="every algorithm the daemon knows: kind, key types "
                                          "and the providers that run each operation")
    a.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_algorithms)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cryptostack`` and ``python -m cryptostack_core``."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"cryptostack: bad configuration: {exc}", file=sys.stderr)
        return 2
    except CryptoError as exc:
        print(f"cryptostack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
