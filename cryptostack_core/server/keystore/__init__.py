"""The persistent key store: key slots with versions, certificate slots and trust stores,
authenticated at rest, on SQLite (one file) or PostgreSQL (shared by several daemons).

:mod:`.store` has the logic and its rules (versions, the manifest, many writers),
:mod:`.backend` the interface an engine implements (:mod:`.sqlite`, :mod:`.postgres`),
:mod:`.sealing` the keys derived from the KEK, :mod:`.kek` the default KEK file, and
:mod:`.migration` the older schemas.
"""

from __future__ import annotations

from cryptostack_core.server.keystore.errors import (
    RECOVERY,
    KeyStoreError,
    KeyStoreUnavailable,
    Problem,
)
from cryptostack_core.server.keystore.kek import FileKekSource, default_kek_path
from cryptostack_core.server.keystore.migration import migrate, migrate_v1, open_store, set_aside
from cryptostack_core.server.keystore.sealing import KEK_SIZE
from cryptostack_core.server.keystore.store import (
    ACTIVE,
    RETIRED,
    SCHEMA_VERSION,
    KeyStore,
    SlotRecord,
    SlotVersions,
    open_backend,
)

__all__ = [
    "ACTIVE",
    "KEK_SIZE",
    "RECOVERY",
    "RETIRED",
    "SCHEMA_VERSION",
    "FileKekSource",
    "KeyStore",
    "KeyStoreError",
    "KeyStoreUnavailable",
    "Problem",
    "SlotRecord",
    "SlotVersions",
    "default_kek_path",
    "migrate",
    "migrate_v1",
    "open_backend",
    "open_store",
    "set_aside",
]
