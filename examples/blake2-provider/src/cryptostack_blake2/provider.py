"""The provider: two algorithms cryptostack does not define, declared here.

``BLAKE2b-512`` is a hash (RFC 7693, 64-byte digest). ``BLAKE2b-512-MAC`` is BLAKE2b-512 in
its keyed mode (RFC 7693 section 2.5: the key, 1..64 bytes, goes into the parameter block;
no HMAC construction) -- a MAC whose name is also its key type. Keys are plain bytes in this
process, persisted as secrets the daemon's key store wraps.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

from cryptostack_core.sdk import (
    AlgorithmKind,
    AlgorithmSpec,
    Buffer,
    Capability,
    CryptoError,
    ErrorCode,
    HashOperation,
    KeyClass,
    KeyFormat,
    KeyOperationPermission,
    Operation,
    Provider,
    ProviderEnvironment,
    ProviderKey,
    SignOperation,
    StoredKey,
)

P = KeyOperationPermission

BLAKE2B_512 = AlgorithmSpec(
    "BLAKE2b-512", AlgorithmKind.HASH, aliases=("BLAKE2B512",), digest_size=64, block_size=128
)
"""The hash: no key, a 64-byte digest."""

BLAKE2B_512_MAC = AlgorithmSpec(
    "BLAKE2b-512-MAC",
    AlgorithmKind.MAC,
    aliases=("KEYED-BLAKE2B-512",),
    key_class=KeyClass.SYMMETRIC,
    key_size=64,
    signature_size=64,
    digest_size=64,
    block_size=128,
    key_algorithms=("BLAKE2b-512-MAC",),
    default_permissions=P.MAC | P.SIGN | P.VERIFY,
)
"""The MAC, also the name of its keys (key_class set, key_algorithms naming itself). Keys of
``key_size`` bytes are generated; 1..64 bytes are imported."""

MAX_KEY = 64


class Blake2Key(ProviderKey):
    """Key material held in this process."""

    def __init__(self, material: bytes) -> None:
        self.algorithm = BLAKE2B_512_MAC.name
        self.material = material
        self.size = len(material)


class _Hash(HashOperation):
    def __init__(self, key: bytes = b"") -> None:
        self._state = hashlib.blake2b(key=key, digest_size=64)

    def update(self, data: Buffer) -> None:
        self._state.update(data)

    def finalize(self) -> bytes:
        return self._state.digest()


class _Mac(_Hash, SignOperation):
    """Keyed BLAKE2b: the daemon computes the full tag with it to sign and to verify."""


class Blake2Provider(Provider):
    """BLAKE2b-512 hashing and keyed BLAKE2b-512 MACs. No options."""

    name = "blake2"

    def __init__(
        self, provider_id: int, options: Mapping[str, Any], environment: ProviderEnvironment
    ) -> None:
        super().__init__(provider_id, options, environment)
        if self.options:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT,
                f"the blake2 provider takes no options, got {sorted(self.options)}",
            )

    @classmethod
    def algorithms(cls) -> Iterable[AlgorithmSpec]:
        return (BLAKE2B_512, BLAKE2B_512_MAC)

    def capabilities(self) -> Iterable[Capability]:
        mac = BLAKE2B_512_MAC.name
        return [
            Capability(BLAKE2B_512.name, Operation.HASH),
            Capability(mac, Operation.GENERATE_KEY),
            Capability(mac, Operation.IMPORT_KEY),
            Capability(mac, Operation.SIGN),
            Capability(mac, Operation.VERIFY),
        ]

    def run_inline(self, operation: Operation, size: int, algorithm: str | None = None) -> bool:
        return size <= 16384  # ~20 us of hashing: not worth a thread hop

    def describe(self) -> dict[str, object]:
        return {"library": "hashlib (BLAKE2 reference code in CPython)"}

    # --- keys ----------------------------------------------------------------------------
    def generate_key(self, algorithm: str, permissions: KeyOperationPermission) -> ProviderKey:
        return Blake2Key(os.urandom(BLAKE2B_512_MAC.key_size))

    def import_key(
        self, algorithm: str, material: bytes, fmt: KeyFormat, permissions: KeyOperationPermission
    ) -> ProviderKey:
        if fmt is not KeyFormat.RAW:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, f"{algorithm} keys are imported RAW, not {fmt.value}"
            )
        if not 1 <= len(material) <= MAX_KEY:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, f"a {algorithm} key is 1 to {MAX_KEY} bytes, got {len(material)}"
            )
        return Blake2Key(bytes(material))

    def export_key(self, key: ProviderKey, fmt: KeyFormat) -> bytes:
        if fmt is not KeyFormat.RAW:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "keys are exported RAW")
        return _material(key)

    def persist_key(self, key: ProviderKey, slot_name: str) -> StoredKey:
        return StoredKey(_material(key), secret=True)  # the key store wraps it at rest

    def load_stored_key(
        self, stored: StoredKey, algorithm: str, permissions: KeyOperationPermission
    ) -> ProviderKey:
        return self.import_key(algorithm, stored.blob, KeyFormat.RAW, permissions)

    # --- operations ----------------------------------------------------------------------
    def create_hash(self, algorithm: str) -> HashOperation:
        return _Hash()

    def create_signer(self, algorithm: str, key: ProviderKey, context: bytes) -> SignOperation:
        return _Mac(_material(key))


def _material(key: ProviderKey) -> bytes:
    if not isinstance(key, Blake2Key):
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, "not a key of the blake2 provider")
    return key.material
