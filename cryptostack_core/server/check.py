"""``cryptostack check``: validate a daemon configuration without starting anything.

Beyond parsing (every :class:`~.config.ConfigError`), it checks what would otherwise fail at
start: providers that are not installed or cannot be imported, test providers without
``allow_test_providers``, key slots naming algorithms no provider brings, root without
``allow_root``, files that slots and trust stores name, and a key store whose KEK is
missing. Nothing is created, no provider is started (their classes are imported, to learn
the algorithms they register).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptostack_core.server import paths
from cryptostack_core.server.config import ConfigError, DaemonConfig
from cryptostack_core.server.discovery import (
    available_provider_names,
    missing_provider_reason,
    provider_class,
    refusal_of_test_provider,
    register_algorithms,
)
from cryptostack_core.server.keystore import KeyStoreError, KeyStoreUnavailable, open_backend
from cryptostack_core.server.split.plan import slot_problem


@dataclass
class CheckReport:
    """Problems (the daemon would not start), warnings, and facts about the config."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the daemon would start."""
        return not self.problems


def check_config(path: Path, *, euid: int | None = None) -> CheckReport:
    """Everything :func:`check` finds in the file at ``path``."""
    report = CheckReport()
    try:
        config = paths.daemon_defaults(DaemonConfig.load(path))
    except ConfigError as exc:
        report.problems.append(str(exc))
        return report
    if (os.geteuid() if euid is None else euid) == 0 and not config.allow_root:
        report.problems.append(
            "the daemon would refuse to run as root: run it as a dedicated "
            "user or set [daemon] allow_root = true"
        )
    _providers(config, report)
    try:  # key slots may name algorithms the providers bring (registered by _providers)
        config = config.resolve_key_algorithms()
    except ConfigError as exc:
        report.problems.append(str(exc))
    for slot in config.key_slots:  # hybrid placements, as the daemon checks them
        problem = slot_problem(slot)
        if problem is not None:
            report.problems.append(f"{config.source}: [[key_slots]] {slot.name!r}: {problem}")
    _files(config, report)
    _store(config, report)
    return report


def _providers(config: DaemonConfig, report: CheckReport) -> None:
    installed = set(available_provider_names())
    for provider in config.providers:
        label = f"[[providers]] {provider.name} (id {provider.id})"
        problem = None
        if provider.name not in installed:
            problem = missing_provider_reason(provider.name)
        else:
            try:
                cls = provider_class(provider.name)
            except Exception as exc:  # an import error inside the plugin
                problem = f"cannot be loaded: {type(exc).__name__}: {exc}"
            else:
                try:
                    register_algorithms(cls)
                except (TypeError, ValueError) as exc:
                    problem = str(exc)
                if problem is None and cls.test_only and not config.allow_test_providers:
                    problem = refusal_of_test_provider(provider)
                elif problem is None and cls.test_only:
                    report.warnings.append(f"{label} is a test provider: not for production")
        if problem is None:
            report.facts.append(f"{label}: installed")
        elif provider.optional:
            report.warnings.append(f"{label} (optional) would be unavailable: {problem}")
        else:
            report.problems.append(f"{label}: {problem}")


def _files(config: DaemonConfig, report: CheckReport) -> None:
    wanted: list[tuple[str, Path]] = []
    wanted += [
        (f"[[key_slots]] {s.name!r} import", s.import_file)
        for s in config.key_slots
        if s.import_file is not None
    ]
    wanted += [(f"[[cert_slots]] {s.name!r} file", s.file) for s in config.cert_slots if s.file is not None]
    for store in config.trust_stores:
        wanted += [(f"[[trust_stores]] {store.name!r}", p) for p in (*store.anchors, *store.crls)]
    for where, file in wanted:
        if not os.access(file, os.R_OK):
            report.problems.append(f"{config.source}: {where}: cannot read {file}")


def _store(config: DaemonConfig, report: CheckReport) -> None:
    report.warnings += paths.storage_warnings(config)
    if paths.in_memory(config):
        report.facts.append("key store: in memory")
        return
    if config.keystore_url is not None:
        _shared_store(config, report)
        return
    assert config.keystore is not None
    report.facts.append(f"key store: {config.keystore}")
    kek, notes = paths.kek_location(config)
    report.warnings += notes
    report.facts.append(
        f"key-encryption key: {kek}"
        + (
            f" (from provider {config.kek_provider}: sealed in that file, or kept in the token)"
            if config.kek_provider
            else ""
        )
    )
    for directory in (config.keystore.parent, kek.parent):
        if not paths.creatable(directory):
            report.problems.append(f"cannot create {directory} (not writable by this user)")
    if not kek.exists() and config.kek_provider is None:  # a provider may keep no file
        try:
            if paths.holds_wrapped_keys(config.keystore):
                report.problems.append(
                    f"the key store {config.keystore} holds wrapped keys but "
                    f"its key-encryption key {kek} is missing"
                )
        except Exception as exc:  # an unreadable store
            report.problems.append(f"cannot read the key store {config.keystore}: {exc}")


def _shared_store(config: DaemonConfig, report: CheckReport) -> None:
    """A PostgreSQL store: reachable, and where its KEK comes from."""
    url = config.keystore_url
    assert url is not None
    try:
        backend = open_backend(url)
    except (KeyStoreError, KeyStoreUnavailable) as exc:
        report.problems.append(exc.message)
        return
    report.facts.append(f"key store: {backend.location} (shared)")
    backend.close()
    if config.kek_provider is not None:
        report.facts.append(f"key-encryption key: from provider {config.kek_provider}")
        return
    kek, notes = paths.kek_location(config)
    report.warnings += notes
    report.facts.append(f"key-encryption key: {kek} (every daemon on this store needs the same one)")
