"""KEM and key-agreement contexts. Shared secrets stay in the daemon as keys."""

from __future__ import annotations

from typing import Any, Self

from cryptostack_core.client.arguments import bytes_arg, enum_arg
from cryptostack_core.client.contexts.base import (
    AlgorithmSetting,
    ContextConfig,
    ContextParent,
    KeySetting,
    OperationContext,
    ResourceLike,
    wire_rid,
)
from cryptostack_core.client.guards import CryptoResourceGuard
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission


class KemContextConfig(AlgorithmSetting, KeySetting, ContextConfig):
    """Settings for :meth:`CryptoContext.create_kem_context`: algorithm (``"ML-KEM-768"``),
    key (public key to encapsulate to, or the key pair), derived-key permissions."""

    def __init__(self) -> None:
        super().__init__()
        self.algorithm: str | None = None
        self.key: ResourceLike | None = None
        self.derived_permissions = KeyOperationPermission.DERIVE

    def set_derived_key_permissions(self, perms: KeyOperationPermission) -> Self:
        """Permissions of the shared-secret keys (default DERIVE; add EXPORT to read them)."""
        self.derived_permissions = enum_arg(perms, KeyOperationPermission, "perms")
        return self


class KeyAgreementContextConfig(KemContextConfig):
    """Settings for :meth:`CryptoContext.create_key_agreement_context`: algorithm
    (``"X25519"``, ``"ECDH-P256"``), private key, derived-key permissions."""


class _SecretProducingContext(OperationContext):
    _family = ""

    def __init__(self, parent: ContextParent, config: KemContextConfig) -> None:
        super().__init__(parent, config)
        if config.algorithm is None or config.key is None:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              f"{type(config).__name__} needs set_algorithm() and set_key()")
        info = self._call(f"{self._family}.create", {
            "algorithm": self._channel.canonical_algorithm(config.algorithm),
            "key": wire_rid(config.key, "key"),
            "derived_permissions": int(config.derived_permissions), "provider": config.provider})
        self._handle = info["ctx"]
        self.algorithm: str = info["algorithm"]
        self.provider: int = info["provider"]
        self.components: list[dict[str, Any]] = list(info.get("components") or ())
        """Split hybrid keys: each half's role, provider and algorithm (the daemon joins
        them); empty otherwise."""

    def _guard(self, info: dict[str, object]) -> CryptoResourceGuard:
        return CryptoResourceGuard._from_wire(self._channel, info)


class KemContext(_SecretProducingContext):
    """Encapsulate to a public key, or decapsulate with the key pair."""

    _family = "kem"

    def encapsulate(self) -> tuple[bytes, CryptoResourceGuard]:
        """(ciphertext, shared-secret key guard)."""
        result = self._call("kem.encapsulate", {"ctx": self._handle})
        return bytes(result["ciphertext"]), self._guard(result["key"])

    def decapsulate(self, ciphertext: bytes | bytearray | memoryview) -> CryptoResourceGuard:
        """Shared-secret key guard for ``ciphertext``."""
        data = bytes_arg(ciphertext, "ciphertext")
        return self._guard(self._call("kem.decapsulate", {"ctx": self._handle,
                                                          "ciphertext": data}))


class KeyAgreementContext(_SecretProducingContext):
    """Agree on a shared secret with a peer's public key."""

    _family = "agree"

    def agree(self, peer_public: bytes | bytearray | memoryview) -> CryptoResourceGuard:
        """Shared-secret key guard; ``peer_public`` is SPKI DER (or raw for X25519)."""
        peer = bytes_arg(peer_public, "peer_public")
        return self._guard(self._call("agree.agree", {"ctx": self._handle, "peer": peer}))
