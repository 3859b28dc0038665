"""KEM and key-agreement contexts (blocking and asyncio). Shared secrets stay in the daemon
as keys."""

from __future__ import annotations

from typing import Any, Self

from cryptostack_core.client.arguments import bytes_arg, enum_arg
from cryptostack_core.client.contexts.base import (
    AlgorithmSetting,
    AsyncOperationContext,
    BytesLike,
    ContextConfig,
    ContextCore,
    ContextParent,
    KeySetting,
    OperationContext,
    ResourceLike,
    wire_rid,
)
from cryptostack_core.client.guards import AsyncCryptoResourceGuard, CryptoResourceGuard
from cryptostack_core.client.plans import Plan
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


class SecretCore(ContextCore):
    """The plans of KEM and agreement contexts (blocking and asyncio)."""

    _family = ""
    algorithm: str
    provider: int

    def _p_create(self, config: KemContextConfig) -> Plan[None]:
        if config.algorithm is None or config.key is None:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, f"{type(config).__name__} needs set_algorithm() and set_key()"
            )
        algorithm = yield from self._channel._p_canonical(config.algorithm)
        info = yield from self._call(
            f"{self._family}.create",
            {
                "algorithm": algorithm,
                "key": wire_rid(config.key, "key"),
                "derived_permissions": int(config.derived_permissions),
                "provider": config.provider,
            },
        )
        self._handle = info["ctx"]
        self.algorithm = info["algorithm"]
        self.provider = info["provider"]
        self.components: list[dict[str, Any]] = list(info.get("components") or ())
        """Split hybrid keys: each half's role, provider and algorithm (the daemon joins
        them); empty otherwise."""

    def _p_encapsulate(self) -> Plan[tuple[bytes, dict[str, Any]]]:
        result = yield from self._call("kem.encapsulate", {"ctx": self._handle})
        return bytes(result["ciphertext"]), result["key"]

    def _p_decapsulate(self, data: bytes) -> Plan[dict[str, Any]]:
        info: dict[str, Any] = yield from self._call(
            "kem.decapsulate", {"ctx": self._handle, "ciphertext": data}
        )
        return info

    def _p_agree(self, peer: bytes) -> Plan[dict[str, Any]]:
        info: dict[str, Any] = yield from self._call("agree.agree", {"ctx": self._handle, "peer": peer})
        return info


class _SecretProducingContext(SecretCore, OperationContext):
    def __init__(self, parent: ContextParent, config: KemContextConfig) -> None:
        super().__init__(parent, config)
        self._run(self._p_create(config))

    def _guard(self, info: dict[str, object]) -> CryptoResourceGuard:
        return CryptoResourceGuard._from_wire(self._channel, info)


class KemContext(_SecretProducingContext):
    """Encapsulate to a public key, or decapsulate with the key pair."""

    _family = "kem"

    def encapsulate(self) -> tuple[bytes, CryptoResourceGuard]:
        """(ciphertext, shared-secret key guard)."""
        ciphertext, info = self._run(self._p_encapsulate())
        return ciphertext, self._guard(info)

    def decapsulate(self, ciphertext: BytesLike) -> CryptoResourceGuard:
        """Shared-secret key guard for ``ciphertext``."""
        data = bytes_arg(ciphertext, "ciphertext")  # checked before anything is touched
        return self._guard(self._run(self._p_decapsulate(data)))


class KeyAgreementContext(_SecretProducingContext):
    """Agree on a shared secret with a peer's public key."""

    _family = "agree"

    def agree(self, peer_public: BytesLike) -> CryptoResourceGuard:
        """Shared-secret key guard; ``peer_public`` is SPKI DER (or raw for X25519)."""
        peer = bytes_arg(peer_public, "peer_public")  # checked before anything is touched
        return self._guard(self._run(self._p_agree(peer)))


class _AsyncSecretProducingContext(SecretCore, AsyncOperationContext):
    def _guard(self, info: dict[str, object]) -> AsyncCryptoResourceGuard:
        return AsyncCryptoResourceGuard._from_wire(self._channel, info)


class AsyncKemContext(_AsyncSecretProducingContext):
    """:class:`KemContext` for asyncio stacks."""

    _family = "kem"

    async def encapsulate(self) -> tuple[bytes, AsyncCryptoResourceGuard]:
        """(ciphertext, shared-secret key guard)."""
        ciphertext, info = await self._run(self._p_encapsulate())
        return ciphertext, self._guard(info)

    async def decapsulate(self, ciphertext: BytesLike) -> AsyncCryptoResourceGuard:
        """Shared-secret key guard for ``ciphertext``."""
        data = bytes_arg(ciphertext, "ciphertext")
        return self._guard(await self._run(self._p_decapsulate(data)))


class AsyncKeyAgreementContext(_AsyncSecretProducingContext):
    """:class:`KeyAgreementContext` for asyncio stacks."""

    _family = "agree"

    async def agree(self, peer_public: BytesLike) -> AsyncCryptoResourceGuard:
        """Shared-secret key guard; ``peer_public`` is SPKI DER (or raw for X25519)."""
        peer = bytes_arg(peer_public, "peer_public")
        return self._guard(await self._run(self._p_agree(peer)))
