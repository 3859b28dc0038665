"""A provider that brings algorithms of its own (loaded through a test-only entry point).

``TOY-HASH`` is SHAKE-256 cut to 32 bytes and ``TOY-MAC`` is keyed BLAKE2s-256: neither
is built into cryptostack, so the tests see a name travel from a provider, through the
daemon, to a client that has never heard of it. ``ClashProvider`` claims ``SHA-256`` with
other facts and must be refused.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

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
    ProviderKey,
    SignOperation,
    StoredKey,
)

P = KeyOperationPermission
TOY_HASH = AlgorithmSpec("TOY-HASH", AlgorithmKind.HASH, aliases=("toyhash",), digest_size=32, block_size=136)
TOY_MAC = AlgorithmSpec(
    "TOY-MAC",
    AlgorithmKind.MAC,
    key_class=KeyClass.SYMMETRIC,
    key_size=32,
    signature_size=32,
    key_algorithms=("TOY-MAC",),
    default_permissions=P.MAC | P.SIGN | P.VERIFY,
)


class ToyKey(ProviderKey):
    def __init__(self, material: bytes) -> None:
        self.algorithm = "TOY-MAC"
        self.material = material
        self.size = len(material)


class _Hash(HashOperation):
    def __init__(self) -> None:
        self.state = hashlib.shake_256()

    def update(self, data: Buffer) -> None:
        self.state.update(data)

    def finalize(self) -> bytes:
        return self.state.digest(32)


class _Mac(SignOperation):
    def __init__(self, key: bytes) -> None:
        self.state = hashlib.blake2s(key=key)

    def update(self, data: Buffer) -> None:
        self.state.update(data)

    def finalize(self) -> bytes:
        return self.state.digest()


class ToyProvider(Provider):
    name = "toy"

    @classmethod
    def algorithms(cls) -> Iterable[AlgorithmSpec]:
        return (TOY_HASH, TOY_MAC)

    def capabilities(self) -> Iterable[Capability]:
        return [
            Capability("TOY-HASH", Operation.HASH),
            Capability("TOY-MAC", Operation.GENERATE_KEY),
            Capability("TOY-MAC", Operation.IMPORT_KEY),
            Capability("TOY-MAC", Operation.SIGN),
            Capability("TOY-MAC", Operation.VERIFY),
        ]

    def generate_key(self, algorithm: str, permissions: KeyOperationPermission) -> ProviderKey:
        return ToyKey(os.urandom(32))

    def import_key(
        self, algorithm: str, material: bytes, fmt: KeyFormat, permissions: KeyOperationPermission
    ) -> ProviderKey:
        if fmt is not KeyFormat.RAW or not 1 <= len(material) <= 32:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "TOY-MAC keys are 1..32 RAW bytes")
        return ToyKey(bytes(material))

    def export_key(self, key: ProviderKey, fmt: KeyFormat) -> bytes:
        assert isinstance(key, ToyKey)
        return key.material

    def persist_key(self, key: ProviderKey, slot_name: str) -> StoredKey:
        assert isinstance(key, ToyKey)
        return StoredKey(key.material, secret=True)

    def load_stored_key(
        self, stored: StoredKey, algorithm: str, permissions: KeyOperationPermission
    ) -> ProviderKey:
        return ToyKey(stored.blob)

    def create_hash(self, algorithm: str) -> HashOperation:
        return _Hash()

    def create_signer(self, algorithm: str, key: ProviderKey, context: bytes) -> SignOperation:
        assert isinstance(key, ToyKey)
        return _Mac(key.material)


def toy_mac(key: bytes, message: bytes) -> bytes:
    """The expected TOY-MAC tag, for the tests."""
    return hashlib.blake2s(message, key=key).digest()


class ClashProvider(ToyProvider):
    name = "clash"

    @classmethod
    def algorithms(cls) -> Iterable[AlgorithmSpec]:
        return (AlgorithmSpec("SHA-256", AlgorithmKind.HASH, digest_size=31),)
