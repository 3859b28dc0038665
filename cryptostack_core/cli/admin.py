"""Commands on the daemon's own configuration and files: ``daemon``, ``check``,
``keystore backup|verify|migrate|repair|reset``.

This is the one command module that imports the server side (about 100 ms of imports on
this machine: asyncio, the providers' loader, the key store). The command line loads a
command's module only when that command runs (:mod:`cryptostack_core.cli.app`), so the
client commands never pay for it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cryptostack_core.cli.output import CommandFailed, Output, explained, fail, json_option
from cryptostack_core.server import keystore as ks
from cryptostack_core.server import paths
from cryptostack_core.server.backup import backup_store
from cryptostack_core.server.check import check_config
from cryptostack_core.server.config import ConfigError, DaemonConfig
from cryptostack_core.server.daemon import DaemonStartError, run_daemon
from cryptostack_core.server.discovery import ProviderStartError, load_provider
from cryptostack_core.wire.errors import CryptoError

CONFIG_HELP = "The daemon's TOML configuration file."


def _load_config(path: str) -> DaemonConfig:
    try:
        return DaemonConfig.load(path)
    except ConfigError as exc:
        raise CommandFailed(
            f"bad configuration: {exc}", f"'cryptostack check --config {path}' lists every problem", status=2
        ) from None


@click.command(short_help="Run the daemon in the foreground.")
@click.option("--config", required=True, type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
def daemon(config: str, log_level: str) -> None:
    """Run the daemon in the foreground. The socket appears only once it is ready;
    SIGTERM or SIGINT stop it cleanly and SIGHUP reloads its configuration.

    Exit status 2: this configuration cannot start (bad file, a required provider that
    cannot start, root without allow_root)."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    out = Output()
    try:
        run_daemon(DaemonConfig.load(config))
    except ConfigError as exc:
        out.note(f"cryptostack: bad configuration: {exc}")
        raise click.exceptions.Exit(2) from None
    except (DaemonStartError, ProviderStartError) as exc:
        out.note(f"cryptostack: cannot start: {exc}")
        raise click.exceptions.Exit(2) from None
    except (CryptoError, OSError, sqlite3.Error) as exc:  # unwritable key store, socket ...
        out.note(f"cryptostack: cannot start: {exc}")
        raise click.exceptions.Exit(1) from None


@click.command(short_help="Validate a daemon configuration without starting it.")
@click.option("--config", required=True, type=click.Path(dir_okay=False), help=CONFIG_HELP)
@json_option
@explained
def check(config: str, json: bool) -> None:
    """Validate a daemon configuration without starting anything. Exit 2 when the daemon
    would not start with it."""
    out = Output(json)
    report = check_config(Path(config))

    def text() -> None:
        for fact in report.facts:
            out.line(fact)
        for warning in report.warnings:
            out.line(f"WARNING: {warning}")
        for problem in report.problems:
            out.note(f"PROBLEM: {problem}")
        out.line(
            f"{config}: "
            + ("OK" if report.ok else f"{len(report.problems)} problem(s); the daemon would not start")
        )

    out.result(
        {
            "config": config,
            "ok": report.ok,
            "facts": report.facts,
            "warnings": report.warnings,
            "problems": report.problems,
        },
        text,
    )
    if not report.ok:
        raise click.exceptions.Exit(2)


@click.group(short_help="Back up, verify, migrate, repair or reset the key store.")
def keystore() -> None:
    """Key store maintenance: backup, and checking or recovering a store
    (docs/operations.md, docs/security.md)."""


@keystore.command(short_help="Online backup of the key store (not the KEK).")
@click.option(
    "--config", type=click.Path(dir_okay=False), help="The daemon's configuration (finds its key store)."
)
@click.option(
    "--keystore",
    "store_path",
    type=click.Path(dir_okay=False),
    help="The key store file (instead of --config).",
)
@click.argument("output", type=click.Path(dir_okay=False))
@json_option
@explained
def backup(config: str | None, store_path: str | None, output: str, json: bool) -> None:
    """Online backup of the key store into OUTPUT (never overwritten). The key-encryption
    key is not in it: back that up separately."""
    out = Output(json)
    if (config is None) == (store_path is None):
        raise click.UsageError("give one of --config or --keystore")
    kek = None
    if store_path is not None:
        store = Path(store_path)
    else:
        assert config is not None
        loaded = paths.daemon_defaults(_load_config(config))
        if loaded.keystore_url is not None:
            fail(
                f"the key store is a shared PostgreSQL database ({paths.store_location(loaded)})",
                "back it up with pg_dump or the database's own backups (docs/scaling.md)",
            )
        if paths.in_memory(loaded) or loaded.keystore is None:
            fail("this configuration keeps its keys in memory: nothing to back up")
        store = loaded.keystore
        kek = paths.kek_location(loaded)[0]
    try:
        result = backup_store(store, Path(output))
    except (OSError, sqlite3.Error) as exc:
        fail(f"backup failed: {exc}")

    def text() -> None:
        out.line(
            f"backed up {store} to {result.path} ({result.size} bytes: {result.key_slots} "
            f"key slots, {result.cert_slots} certificate slots, {result.trust_stores} "
            "trust stores)"
        )
        out.line(
            "the key-encryption key is NOT in this backup: back it up separately"
            + (f" ({kek})" if kek is not None else "")
            + "; see docs/operations.md"
        )

    out.result(
        {
            "store": str(store),
            "backup": str(result.path),
            "size": result.size,
            "key_slots": result.key_slots,
            "cert_slots": result.cert_slots,
            "trust_stores": result.trust_stores,
            "kek": None if kek is None else str(kek),
        },
        text,
    )


def _with_store(config: str, action: Callable[[Any, Any, Path | None], int]) -> None:
    """Run ``action(store, kek_source, kek_path)`` on the configured key store (a SQLite
    file or a ``postgresql://`` URL); its result is the exit status."""
    loaded = paths.daemon_defaults(_load_config(config))
    location = paths.store_location(loaded)
    if location is None:
        fail(f"{config}: this configuration keeps its keys in memory", status=2)
    kek = paths.kek_location(loaded)[0]
    provider = None
    source = None
    if loaded.kek_provider is not None:  # the KEK comes from a provider (TPM, token)
        entry = next(p for p in loaded.providers if p.id == loaded.kek_provider)
        root = loaded.state_dir or (loaded.keystore.parent if loaded.keystore else Path.cwd())
        provider = load_provider(
            entry,
            root,
            Path(loaded.source).resolve().parent,
            allow_test_providers=loaded.allow_test_providers,
        )
        source = provider.instance.kek_source() if provider.instance is not None else None
        if source is None:
            fail(
                f"kek_provider {entry.name} ({entry.id}) is unavailable: {provider.load_error}",
                "'cryptostack check --config FILE' says more",
            )
    try:
        status = action(location, source, kek)
    except (OSError, sqlite3.Error) as exc:
        fail(
            f"cannot use the key store {location}: {exc}",
            "check the path and its permissions (the daemon's user owns it)",
        )
    finally:
        if provider is not None and provider.instance is not None:
            provider.instance.close()
    if status:
        raise click.exceptions.Exit(status)


@keystore.command(name="verify", short_help="Check every row, the manifest and the KEK.")
@click.option("--config", required=True, type=click.Path(dir_okay=False), help=CONFIG_HELP)
@json_option
@explained
def verify_store(config: str, json: bool) -> None:
    """Check every row, the manifest and the KEK. Exit 1 if the store is not intact."""
    out = Output(json)

    def verify(path: Any, source: Any, kek: Path | None) -> int:
        store = ks.KeyStore.open_unverified(path, source, kek)
        try:
            problems = store.verify()
        finally:
            store.close()

        def text() -> None:
            for problem in problems:
                out.line(f"  {problem}")
            out.line(
                f"key store {path}: "
                + (f"{len(problems)} problem(s); the daemon will not start on it" if problems else "intact")
            )

        out.result({"store": str(path), "intact": not problems, "problems": [str(p) for p in problems]}, text)
        return 1 if problems else 0

    _with_store(config, verify)


@keystore.command(short_help="Convert a schema-1 or schema-2 store, keeping a copy.")
@click.option("--config", required=True, type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option(
    "--drop-invalid",
    is_flag=True,
    help="Convert even if some rows do not unwrap or authenticate (they are dropped).",
)
@json_option
@explained
def migrate(config: str, drop_invalid: bool, json: bool) -> None:
    """Convert a schema-1 or schema-2 store (cryptostack 0.1) to schema 3 (key versions),
    keeping a copy of it. The daemon upgrades a schema-2 store by itself at start."""
    out = Output(json)

    def run(path: Any, source: Any, kek: Path | None) -> int:
        schema, copy, converted, dropped = ks.migrate(path, source, kek, drop_invalid=drop_invalid)

        def text() -> None:
            out.line(
                f"key store {path}: converted from schema {schema} to "
                f"{ks.SCHEMA_VERSION}; the schema-{schema} file is kept as {copy}"
            )
            if schema == 1:
                out.line(
                    "Schema 1 did not authenticate these rows' metadata; they are now "
                    "sealed as they are. Review them:"
                )
            else:
                out.line("Every row was authenticated under the KEK before it was converted:")
            for line in converted:
                out.line(f"  {line}")
            for line in dropped:
                out.line(f"  DROPPED {line}")

        out.result(
            {
                "store": str(path),
                "from_schema": schema,
                "schema": ks.SCHEMA_VERSION,
                "copy": str(copy),
                "converted": converted,
                "dropped": dropped,
            },
            text,
        )
        return 0

    _with_store(config, run)


@keystore.command(short_help="Drop rows that fail authentication, re-seal the rest.")
@click.option("--config", required=True, type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("--yes", is_flag=True, help="Really drop the rows (their keys are lost).")
@json_option
@explained
def repair(config: str, yes: bool, json: bool) -> None:
    """Drop the rows that fail authentication and re-seal the rest. Without --yes, only
    shows what it would drop (exit 1 if anything)."""
    out = Output(json)

    def run(path: Any, source: Any, kek: Path | None) -> int:
        store = ks.KeyStore.open_unverified(path, source, kek)
        try:
            if not yes:
                problems = store.verify()

                def dry() -> None:
                    for problem in problems:
                        out.line(f"  would drop: {problem}")
                    out.line(
                        "nothing to repair"
                        if not problems
                        else "rerun with --yes to drop these rows (their keys are lost)"
                    )

                out.result(
                    {"store": str(path), "repaired": False, "would_drop": [str(p) for p in problems]}, dry
                )
                return 1 if problems else 0
            dropped = store.repair()
        finally:
            store.close()

        def text() -> None:
            for problem in dropped:
                out.line(f"  dropped: {problem}")
            out.line(f"key store {path}: re-sealed")

        out.result({"store": str(path), "repaired": True, "dropped": [str(p) for p in dropped]}, text)
        return 0

    _with_store(config, run)


@keystore.command(short_help="Set the store and its KEK aside; the next start is empty.")
@click.option("--config", required=True, type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("--yes", is_flag=True, help="Really set the store aside.")
@json_option
@explained
def reset(config: str, yes: bool, json: bool) -> None:
    """Set the store and its KEK aside (renamed, not deleted): the next start is empty and
    provisions new keys."""
    out = Output(json)

    def run(path: Any, source: Any, kek: Path | None) -> int:
        if not yes:
            fail(
                f"this sets {path} and its KEK aside (renamed, not deleted): the daemon then "
                "starts with an empty store and provisions new keys",
                "rerun with --yes",
            )
        # a KEK kept in a token (no file) stays where it is
        moved = ks.set_aside(path, None if source is not None and not source.uses_file else kek)

        def text() -> None:
            for item in moved:
                out.line(f"  set aside: {item}")

        out.result({"store": str(path), "set_aside": [str(m) for m in moved]}, text)
        return 0

    _with_store(config, run)
