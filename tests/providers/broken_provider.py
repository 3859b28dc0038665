"""A deliberately broken provider, for the conformance kit's own tests.

Three faults, each of which the kit must name:

* it claims SHA-256 but computes it wrongly (SHA-256 of the message with one byte appended);
* it leaks: every key it hands out stays referenced after ``release_key``;
* it ignores deadlines: with ``test_hang`` set, ``random_bytes`` sleeps through the caller's
  deadline (as a stuck backend call would) instead of answering OPERATION_TIMED_OUT.

Everything else (HMAC-SHA-256 keys and MACs, RANDOM) is correct, so the kit's other checks
pass and the failures point at exactly these three.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Iterable

from cryptostack_core.sdk import (
    Buffer,
    Capability,
    CryptoError,
    ErrorCode,
    HashOperation,
    KeyFormat,
    KeyOperationPermission,
    Operation,
    Provider,
    ProviderKey,
    SignOperation,
    StoredKey,
)
from cryptostack_core.testing.conformance import HangProbe, Profile, static_setup
from cryptostack_core.testing.conformance.profile import Backend

HANG_SECONDS = 3.0


class SecretKey(ProviderKey):
    def __init__(self, material: bytes) -> None:
        self.algorithm = "HMAC-SHA-256"
        self.material = material
        self.size = len(material)


class _WrongSha256(HashOperation):
    def __init__(self) -> None:
        self.state = hashlib.sha256()

    def update(self, data: Buffer) -> None:
        self.state.update(data)

    def finalize(self) -> bytes:
        self.state.update(b"\x00")  # the fault: not SHA-256
        return self.state.digest()


class _Hmac(SignOperation):
    def __init__(self, key: bytes) -> None:
        self.state = hmac.new(key, digestmod="sha256")

    def update(self, data: Buffer) -> None:
        self.state.update(data)

    def finalize(self) -> bytes:
        return self.state.digest()


class BrokenProvider(Provider):
    name = "broken"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.handed_out: list[ProviderKey] = []  # the leak: never emptied

    def capabilities(self) -> Iterable[Capability]:
        return [
            Capability("SHA-256", Operation.HASH),
            Capability("RANDOM", Operation.RANDOM),
            Capability("HMAC-SHA-256", Operation.GENERATE_KEY),
            Capability("HMAC-SHA-256", Operation.IMPORT_KEY),
            Capability("HMAC-SHA-256", Operation.SIGN),
            Capability("HMAC-SHA-256", Operation.VERIFY),
        ]

    def _hand_out(self, key: SecretKey) -> SecretKey:
        self.handed_out.append(key)
        return key

    def generate_key(self, algorithm: str, permissions: KeyOperationPermission) -> ProviderKey:
        return self._hand_out(SecretKey(os.urandom(32)))

    def import_key(
        self, algorithm: str, material: bytes, fmt: KeyFormat, permissions: KeyOperationPermission
    ) -> ProviderKey:
        if fmt is not KeyFormat.RAW or not 1 <= len(material) <= 1024:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "HMAC keys are 1..1024 RAW bytes")
        return self._hand_out(SecretKey(bytes(material)))

    def export_key(self, key: ProviderKey, fmt: KeyFormat) -> bytes:
        assert isinstance(key, SecretKey)
        return key.material

    def persist_key(self, key: ProviderKey, slot_name: str) -> StoredKey:
        assert isinstance(key, SecretKey)
        return StoredKey(key.material, secret=True)

    def load_stored_key(
        self, stored: StoredKey, algorithm: str, permissions: KeyOperationPermission
    ) -> ProviderKey:
        return self._hand_out(SecretKey(stored.blob))

    def create_hash(self, algorithm: str) -> HashOperation:
        return _WrongSha256()

    def create_signer(self, algorithm: str, key: ProviderKey, context: bytes) -> SignOperation:
        assert isinstance(key, SecretKey)
        return _Hmac(key.material)

    def random_bytes(self, length: int) -> bytes:
        if self.options.get("test_hang"):
            time.sleep(HANG_SECONDS)  # the fault: the deadline is not looked at
        return os.urandom(length)


def profile() -> Profile:
    """Tells the kit about the hang hook, so it checks the deadline through it."""
    return Profile(
        name="broken",
        provider_id=1000,
        setup=static_setup(Backend()),
        hang=HangProbe(options={"test_hang": True}, operation="random"),
    )
