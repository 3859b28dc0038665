"""SIGHUP: reopen the audit log, re-read the configuration file, apply what is safe.

What a reload applies, without dropping a client:

* the audit log is reopened (after rotation), at the newly configured path if it changed;
* key slots: new slots appear (and are provisioned when they say so), removed slots
  disappear from the names clients can resolve (the stored key stays in the key store),
  access lists, permissions and compatible providers of a slot change. A slot whose
  ``algorithm``, ``provider``, ``provision`` or ``import`` changed keeps its running
  definition (what the key store holds was made for it): that needs a restart;
* certificate slots and trust stores: new ones are seeded from their files, removed ones
  disappear, access lists change, and one whose files changed on disk since the daemon read
  them (a new CRL, a renewed certificate) is replaced in the key store. Files that did not
  change leave the key store alone, so a trust store updated through the API survives a
  log-rotation SIGHUP.

Everything else (providers, socket, key store, limits) needs a restart: the reload says
which settings changed and were not applied. A configuration that no longer parses is
reported and the running one stays. Every change is logged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from cryptostack_core import x509 as x509_engine
from cryptostack_core.server.config import (
    CertSlotConfig,
    ConfigError,
    DaemonConfig,
    KeySlotConfig,
    TrustStoreConfig,
)
from cryptostack_core.server.core import ServiceCore
from cryptostack_core.server.split.plan import slot_problem
from cryptostack_core.wire.errors import CryptoError

log = logging.getLogger("cryptostack.reload")
_SLOT_IDENTITY = ("algorithm", "provider", "provision", "import_file", "import_format")
"""Key-slot settings that describe the stored key itself: changing them needs a restart."""
_RELOADED = {"key_slots", "cert_slots", "trust_stores", "audit_log", "source"}


def _digest(files: tuple[Path, ...]) -> str | None:
    """Digest of the files' contents (None if one cannot be read)."""
    h = hashlib.sha256()
    try:
        for path in files:
            data = path.read_bytes()
            h.update(len(data).to_bytes(8, "big") + data)
    except OSError:
        return None
    return h.hexdigest()


def _cert_files(slot: CertSlotConfig) -> tuple[Path, ...]:
    return (slot.file,) if slot.file is not None else ()


def _store_files(store: TrustStoreConfig) -> tuple[Path, ...]:
    return (*store.anchors, *store.crls)


class Reloader:
    """Applies a re-read configuration to a running service core."""

    def __init__(
        self,
        core: ServiceCore,
        path: Path | None,
        normalise: Callable[[DaemonConfig], DaemonConfig] = lambda c: c,
    ) -> None:
        self.core = core
        self.path = path
        self.normalise = normalise
        # What the files said when the daemon last read them: a reload replaces key-store
        # content only for files that changed since.
        self._cert_digests = {s.name: _digest(_cert_files(s)) for s in core.config.cert_slots}
        self._store_digests = {s.name: _digest(_store_files(s)) for s in core.config.trust_stores}

    def reload(self) -> list[str]:
        """Reopen the audit log and apply the configuration file; returns what changed."""
        changes: list[str] = []
        new: DaemonConfig | None = None
        if self.path is not None:
            try:
                new = self.normalise(DaemonConfig.load(self.path))
                for slot in new.key_slots:  # hybrid placements, as checked at start
                    problem = slot_problem(slot)
                    if problem is not None:
                        raise ConfigError(f"{new.source}: [[key_slots]] {slot.name!r}: {problem}")
            except (ConfigError, CryptoError) as exc:
                new = None
                log.error("reload: %s; the running configuration stays", exc)
        old = self.core.config
        audit = new.audit_log if new is not None else old.audit_log
        self.core.reopen_audit(audit)
        changes.append(f"audit log reopened ({audit or 'no file'})")
        if new is not None:
            changes += self._restart_only(old, new)
            key_slots = self._key_slots(old, new, changes)
            cert_slots = self._cert_slots(old, new, changes)
            trust_stores = self._trust_stores(old, new, changes)
            self.core.config = dataclasses.replace(
                old,
                key_slots=key_slots,
                cert_slots=cert_slots,
                trust_stores=trust_stores,
                audit_log=new.audit_log,
            )
            self.core.slots = {s.name: s for s in key_slots}
            self.core.forget_slot_keys()  # export allow-lists follow the new slot settings
            self.core.cert_slots = {s.name: s for s in cert_slots}
            self.core.trust_stores = {s.name: s for s in trust_stores}
            try:
                self.core.provision_slots()
            except CryptoError as exc:
                changes.append(f"provisioning failed: {exc.message}")
        for change in changes:
            log.info("reload: %s", change)
        return changes

    @staticmethod
    def _restart_only(old: DaemonConfig, new: DaemonConfig) -> list[str]:
        changed = [
            f.name
            for f in dataclasses.fields(DaemonConfig)
            if f.name not in _RELOADED and getattr(old, f.name) != getattr(new, f.name)
        ]
        if not changed:
            return []
        return [f"changed but not applied (needs a restart): {', '.join(changed)}"]

    def _key_slots(
        self, old: DaemonConfig, new: DaemonConfig, changes: list[str]
    ) -> tuple[KeySlotConfig, ...]:
        running = {s.name: s for s in old.key_slots}
        result = []
        for slot in new.key_slots:
            before = running.get(slot.name)
            if before is None:
                changes.append(f"key slot {slot.name!r} added")
            elif before != slot:
                identity = [f for f in _SLOT_IDENTITY if getattr(before, f) != getattr(slot, f)]
                if identity:
                    changes.append(
                        f"key slot {slot.name!r}: {', '.join(identity)} changed: "
                        "not applied (needs a restart)"
                    )
                    slot = before
                else:
                    changes.append(f"key slot {slot.name!r} updated")
            result.append(slot)
        names = {s.name for s in new.key_slots}
        changes += [
            f"key slot {s.name!r} removed (its stored key stays in the key store)"
            for s in old.key_slots
            if s.name not in names
        ]
        return tuple(result)

    def _cert_slots(
        self, old: DaemonConfig, new: DaemonConfig, changes: list[str]
    ) -> tuple[CertSlotConfig, ...]:
        running = {s.name: s for s in old.cert_slots}
        store = self.core.keystore
        for slot in new.cert_slots:
            digest = _digest(_cert_files(slot))
            known = slot.name in running
            refresh = known and slot.file is not None and digest != self._cert_digests.get(slot.name)
            seed = not known and slot.file is not None and store.certificate(slot.name) is None
            if refresh or seed:
                assert slot.file is not None
                try:
                    cert = x509_engine.parse_certificate(slot.file.read_bytes())
                except (OSError, CryptoError) as exc:
                    changes.append(
                        f"certificate slot {slot.name!r}: {slot.file} not loaded "
                        f"({exc}); the stored certificate stays"
                    )
                    continue
                store.store_certificate(slot.name, cert.public_bytes(Encoding.DER))
                changes.append(
                    f"certificate slot {slot.name!r} "
                    f"{'reloaded from' if refresh else 'seeded from'} {slot.file}"
                )
            elif not known:
                changes.append(f"certificate slot {slot.name!r} added")
            elif running[slot.name] != slot:
                changes.append(f"certificate slot {slot.name!r} updated")
            self._cert_digests[slot.name] = digest
        names = {s.name for s in new.cert_slots}
        changes += [f"certificate slot {s.name!r} removed" for s in old.cert_slots if s.name not in names]
        return new.cert_slots

    def _trust_stores(
        self, old: DaemonConfig, new: DaemonConfig, changes: list[str]
    ) -> tuple[TrustStoreConfig, ...]:
        running = {s.name: s for s in old.trust_stores}
        store = self.core.keystore
        for entry in new.trust_stores:
            digest = _digest(_store_files(entry))
            known = entry.name in running
            refresh = known and digest != self._store_digests.get(entry.name)
            seed = not known and store.trust_store(entry.name) is None
            if refresh or seed:
                try:
                    anchors = [x509_engine.parse_certificate(p.read_bytes()) for p in entry.anchors]
                    crls = [x509_engine.parse_crl(p.read_bytes()) for p in entry.crls]
                except (OSError, CryptoError) as exc:
                    changes.append(
                        f"trust store {entry.name!r}: files not loaded ({exc}); the stored trust store stays"
                    )
                    continue
                store.store_trust_store(
                    entry.name,
                    [a.public_bytes(Encoding.DER) for a in anchors],
                    [c.public_bytes(Encoding.DER) for c in crls],
                )
                changes.append(
                    f"trust store {entry.name!r} {'reloaded' if refresh else 'seeded'}"
                    f" from its files ({len(anchors)} anchors, {len(crls)} CRLs)"
                )
            elif not known:
                changes.append(f"trust store {entry.name!r} added")
            elif running[entry.name] != entry:
                changes.append(f"trust store {entry.name!r} updated")
            self._store_digests[entry.name] = digest
        names = {s.name for s in new.trust_stores}
        changes += [f"trust store {s.name!r} removed" for s in old.trust_stores if s.name not in names]
        return new.trust_stores
