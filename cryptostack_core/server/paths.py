"""Where a service keeps its state: the state directory, the key store and its KEK.

A daemon persists by default; keys kept only in memory are always a configured choice and
a logged warning, never a silent default. The rules (docs/operations.md):

* **state directory**: ``[daemon] state_dir``, else ``$STATE_DIRECTORY`` (systemd's
  ``StateDirectory=``, first entry), else the key store's directory when ``keystore`` is
  set, else the socket's directory.
* **key store**: ``[daemon] keystore``, else ``<state directory>/keystore.sqlite3`` for a
  daemon. ``keystore = ":memory:"`` keeps keys in memory; ``keystore = "postgresql://..."``
  is a database shared by several daemons (docs/scaling.md). An in-process service
  (``inproc://``) without ``keystore`` keeps its keys in memory.
* **KEK**: ``[daemon] kek_file``, else ``<store directory>-kek/<store name>.kek``: beside,
  not inside, the store's directory, so a backup of that directory never carries the key
  that unwraps it (for a shared store: ``<state directory>-kek/keystore-postgresql.kek``).
  A KEK at the former default (``<store>.kek`` inside the store's directory) is still
  used, with a warning saying where to move it. A ``kek_provider`` whose KEK source keeps
  nothing on disk (a PKCS#11 token) needs no file at all.

A key store that holds wrapped keys but whose KEK file is missing refuses to open: creating
a fresh KEK would make every stored key unreadable.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from cryptostack_core.server.config import ConfigError, DaemonConfig
from cryptostack_core.wire.errors import CryptoError, ErrorCode

STORE_NAME = "keystore.sqlite3"
"""File name of a key store placed by default."""
VOLATILE_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})


def systemd_state_directory(environ: Mapping[str, str]) -> Path | None:
    """The first directory of ``$STATE_DIRECTORY`` (set by systemd's ``StateDirectory=``)."""
    value = environ.get("STATE_DIRECTORY", "")
    first = value.split(":")[0]
    return Path(first) if first else None


def daemon_defaults(
    config: DaemonConfig, environ: Mapping[str, str] | None = None, socket_path: Path | None = None
) -> DaemonConfig:
    """``config`` with the state directory and key store a daemon uses filled in.

    ``socket_path`` is the socket actually served (it differs from ``[daemon] socket`` under
    socket activation).
    """
    env = os.environ if environ is None else environ
    socket = socket_path or config.socket
    state_dir = (
        config.state_dir
        or systemd_state_directory(env)
        or (config.keystore.parent if config.keystore is not None else None)
        or (socket.parent if socket is not None else None)
    )
    if state_dir is None:
        raise ConfigError(
            f"{config.source}: [daemon]: no state directory: set state_dir or "
            "keystore (or run under systemd with StateDirectory=)"
        )
    keystore = config.keystore
    if keystore is None and not config.keystore_in_memory and config.keystore_url is None:
        keystore = state_dir / STORE_NAME
    return dataclasses.replace(config, state_dir=state_dir, keystore=keystore)


def in_memory(config: DaemonConfig) -> bool:
    """Whether the service keeps its keys in memory only."""
    return config.keystore_in_memory or (config.keystore is None and config.keystore_url is None)


def store_location(config: DaemonConfig) -> Path | str | None:
    """The key store of ``config``: its file, its ``postgresql://`` URL, or None (memory)."""
    if config.keystore_in_memory:
        return None
    return config.keystore_url or config.keystore


def default_kek_file(store: Path) -> Path:
    """The default KEK location of a store: ``<store dir>-kek/<store name>.kek``."""
    directory = store.parent
    return directory.with_name(directory.name + "-kek") / (store.name + ".kek")


def legacy_kek_file(store: Path) -> Path:
    """Where the KEK used to be by default: beside the store, inside its directory."""
    return store.with_name(store.name + ".kek")


def kek_location(config: DaemonConfig) -> tuple[Path, list[str]]:
    """The KEK file of ``config``'s key store and any warning about where it is."""
    warnings: list[str] = []
    if config.keystore_url is not None:
        if config.kek_file is not None:
            return config.kek_file, warnings
        if config.state_dir is None:
            raise ConfigError(
                f"{config.source}: [daemon]: a shared key store needs kek_file, kek_provider or state_dir"
            )
        return default_kek_file(config.state_dir / "keystore-postgresql"), warnings
    store = config.keystore
    assert store is not None
    if config.kek_file is not None:
        kek = config.kek_file
        if kek.resolve().parent == store.resolve().parent:
            warnings.append(
                f"the key-encryption key {kek} is in the key store's directory: a "
                "backup of that directory carries both; keep it elsewhere "
                "(docs/operations.md)"
            )
        return kek, warnings
    kek = default_kek_file(store)
    legacy = legacy_kek_file(store)
    if not kek.exists() and legacy.exists():
        warnings.append(
            f"the key-encryption key is at its former default {legacy}, inside the "
            f"key store's directory: stop the daemon and move it to {kek} (or set "
            "[daemon] kek_file), so a backup of the store does not carry it"
        )
        return legacy, warnings
    return kek, warnings


def prepare_kek(store: Path | str, kek: Path) -> None:
    """Create the KEK's directory (0700), and refuse when the store holds wrapped keys but
    the KEK file is gone (a new KEK would orphan every stored key; a shared store checks
    that itself when it opens)."""
    if kek.exists():
        return
    if isinstance(store, Path) and holds_wrapped_keys(store):
        hint = ""
        legacy = legacy_kek_file(store)
        if legacy != kek and legacy.exists():
            hint = f"; {legacy} (the former default location) exists: move it to {kek}"
        raise CryptoError(
            ErrorCode.INVALID_STATE,
            f"the key store {store} holds wrapped keys but its key-encryption key "
            f"{kek} is missing: restore the KEK from its backup "
            f"(docs/operations.md){hint}",
        )
    try:
        kek.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise CryptoError(
            ErrorCode.ACCESS_DENIED,
            f"cannot create the key-encryption key's directory {kek.parent}: "
            f"{exc.strerror or exc}; create it (mode 0700, owned by the daemon's "
            "user) or set [daemon] kek_file",
        ) from None


def creatable(path: Path) -> bool:
    """Whether ``path`` exists or its nearest existing ancestor is writable."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe == path or os.access(probe, os.W_OK)


def holds_wrapped_keys(store: Path) -> bool:
    """Whether the store at ``store`` holds key material wrapped under a KEK."""
    if not store.exists():
        return False
    db = sqlite3.connect(f"file:{store}?mode=rw", uri=True)  # never creates a file
    try:
        row = db.execute("SELECT count(*) FROM key_slots WHERE secret != 0").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False  # a store that never held a key
        raise
    finally:
        db.close()
    return bool(row and row[0])


def volatile(path: Path) -> bool:
    """Whether ``path`` lies on a memory-backed file system (lost at reboot)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    target = str(path.resolve())
    best, fstype = "", ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, fields[2]
    return fstype in VOLATILE_FILE_SYSTEMS


def storage_warnings(config: DaemonConfig) -> list[str]:
    """What an operator should hear about where keys are kept."""
    if config.keystore_in_memory:
        return [
            'the key store is in memory ([daemon] keystore = ":memory:"): persisted keys '
            "are lost when the service stops"
        ]
    if config.keystore_url is not None:
        return []
    if config.keystore is None:
        if config.key_slots:
            return [
                "no [daemon] keystore: this in-process service keeps its key slots in "
                "memory; they are lost when it stops"
            ]
        return []
    if volatile(config.keystore.parent):
        return [
            f"the key store {config.keystore} is on a memory-backed file system: its keys "
            "are lost at reboot; set [daemon] keystore or state_dir"
        ]
    return []
