"""A test-only provider that wraps the provider under test and holds one call at a gate.

The kit's deadline checks for providers that run in the daemon's process need a call that
stays in the provider past its deadline, on demand. :class:`GateProvider` delegates every
call to the wrapped provider; the first call named by ``hold`` stops at a
:class:`~cryptostack_core.testing.waiting.Gate` (a cross-process event: the test learns that
the call arrived, and opens the gate to let it finish).

It also counts the keys the wrapped provider handed out that are not released yet
(``describe()["live_keys"]``), so the kit sees whether the daemon released what an
abandoned call made after its caller had given up.

Options: ``inner`` (entry-point name), ``inner_options``, ``gate`` (the gate's socket path),
``hold`` (``generate_key``, ``import_key``, ``hash`` or ``random``).
Loaded through a private entry point (:mod:`cryptostack_core.testing.entrypoints`); it is
never installed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from cryptostack_core.sdk import (
    Capability,
    CipherDirection,
    CipherOperation,
    HashOperation,
    KeyFormat,
    KeyOperationPermission,
    Operation,
    Provider,
    ProviderEnvironment,
    ProviderKey,
    ProviderState,
    SignOperation,
    StoredKey,
    VerifyOperation,
)
from cryptostack_core.server.discovery import register_algorithms
from cryptostack_core.testing.conformance.target import load_provider_class
from cryptostack_core.testing.waiting import pass_gate

__all__ = ["GateProvider"]


class GateProvider(Provider):
    """See the module docstring."""

    name = "kit-gate"
    test_only = True

    def __init__(
        self, provider_id: int, options: Mapping[str, Any], environment: ProviderEnvironment
    ) -> None:
        super().__init__(provider_id, options, environment)
        inner_class = load_provider_class(str(options["inner"]))
        register_algorithms(inner_class)
        self.inner = inner_class(provider_id, dict(options.get("inner_options", {})), environment)
        self.gate = str(options["gate"])
        self.hold = str(options.get("hold", "generate_key"))
        self._held = False
        self._lock = threading.Lock()
        self._live: dict[int, ProviderKey] = {}

    # --- the gate ----------------------------------------------------------------------------
    def _pass(self, call: str) -> None:
        with self._lock:
            if call != self.hold or self._held:
                return
            self._held = True
        pass_gate(self.gate)

    def _track(self, key: ProviderKey) -> ProviderKey:
        with self._lock:
            self._live[id(key)] = key
        return key

    # --- lifecycle and facts -----------------------------------------------------------------
    def start(self) -> None:
        self.inner.start()

    def close(self) -> None:
        self.inner.close()

    def state(self) -> tuple[ProviderState, str]:
        return self.inner.state()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            live = len(self._live)
        return {"wrapped": self.inner.describe(), "live_keys": live, "held": self._held, "test_only": True}

    def capabilities(self) -> Iterable[Capability]:
        return self.inner.capabilities()

    def run_inline(self, operation: Operation, size: int, algorithm: str | None = None) -> bool:
        return False

    # --- keys ----------------------------------------------------------------------------------
    def generate_key(self, algorithm: str, permissions: KeyOperationPermission) -> ProviderKey:
        self._pass("generate_key")
        return self._track(self.inner.generate_key(algorithm, permissions))

    def import_key(
        self, algorithm: str, material: bytes, fmt: KeyFormat, permissions: KeyOperationPermission
    ) -> ProviderKey:
        self._pass("import_key")
        return self._track(self.inner.import_key(algorithm, material, fmt, permissions))

    def export_key(self, key: ProviderKey, fmt: KeyFormat) -> bytes:
        return self.inner.export_key(key, fmt)

    def export_public_key(self, key: ProviderKey, fmt: KeyFormat = KeyFormat.SPKI_DER) -> bytes:
        return self.inner.export_public_key(key, fmt)

    def release_key(self, key: ProviderKey) -> None:
        with self._lock:
            self._live.pop(id(key), None)
        self.inner.release_key(key)

    def persist_key(self, key: ProviderKey, slot_name: str) -> StoredKey:
        return self.inner.persist_key(key, slot_name)

    def load_stored_key(
        self, stored: StoredKey, algorithm: str, permissions: KeyOperationPermission
    ) -> ProviderKey:
        return self._track(self.inner.load_stored_key(stored, algorithm, permissions))

    def delete_stored_key(self, stored: StoredKey) -> None:
        self.inner.delete_stored_key(stored)

    # --- operations ----------------------------------------------------------------------------
    def create_hash(self, algorithm: str) -> HashOperation:
        self._pass("hash")
        return self.inner.create_hash(algorithm)

    def create_cipher(
        self, algorithm: str, key: ProviderKey, direction: CipherDirection, iv: bytes, tag_length: int
    ) -> CipherOperation:
        return self.inner.create_cipher(algorithm, key, direction, iv, tag_length)

    def signature_size(self, algorithm: str, key: ProviderKey) -> int:
        return self.inner.signature_size(algorithm, key)

    def create_signer(self, algorithm: str, key: ProviderKey, context: bytes) -> SignOperation:
        return self.inner.create_signer(algorithm, key, context)

    def create_verifier(self, algorithm: str, key: ProviderKey, context: bytes) -> VerifyOperation:
        return self.inner.create_verifier(algorithm, key, context)

    def encapsulate(
        self, algorithm: str, key: ProviderKey, secret_permissions: KeyOperationPermission
    ) -> tuple[bytes, ProviderKey]:
        ciphertext, secret = self.inner.encapsulate(algorithm, key, secret_permissions)
        return ciphertext, self._track(secret)

    def decapsulate(
        self, algorithm: str, key: ProviderKey, ciphertext: bytes, secret_permissions: KeyOperationPermission
    ) -> ProviderKey:
        return self._track(self.inner.decapsulate(algorithm, key, ciphertext, secret_permissions))

    def agree(
        self, algorithm: str, key: ProviderKey, peer_public: bytes, secret_permissions: KeyOperationPermission
    ) -> ProviderKey:
        return self._track(self.inner.agree(algorithm, key, peer_public, secret_permissions))

    def derive(
        self,
        algorithm: str,
        key: ProviderKey,
        *,
        length: int,
        salt: bytes,
        info: bytes,
        output_algorithm: str,
        permissions: KeyOperationPermission,
    ) -> ProviderKey:
        return self._track(
            self.inner.derive(
                algorithm,
                key,
                length=length,
                salt=salt,
                info=info,
                output_algorithm=output_algorithm,
                permissions=permissions,
            )
        )

    def random_bytes(self, length: int) -> bytes:
        self._pass("random")
        return self.inner.random_bytes(length)
