"""Key management: generate, import, load, persist, export, derive."""

from __future__ import annotations

from typing import Any, Self

from cryptostack_core.client.arguments import (
    bytes_arg,
    components_arg,
    enum_arg,
    instance_arg,
    int_arg,
    optional_int_arg,
    str_arg,
)
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
from cryptostack_core.wire.algorithms import known_or_deferred
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission
from cryptostack_core.wire.resources import KeyFormat, KeySlotInfo, KeySlotStatus


class KeyManagementContextConfig(ContextConfig):
    """Settings for :meth:`CryptoContext.create_key_management_context` (timeouts)."""


class GenerateKeyParams(AlgorithmSetting):
    """What key to generate: key type (``"AES-256"``, ``"ECDSA-P256"``, ``"ML-DSA-65"`` ...),
    permissions, provider; for hybrid key types, where the halves go."""

    def __init__(self) -> None:
        self.algorithm: str | None = None
        self.permissions: KeyOperationPermission | None = None
        self.provider: int | None = None
        self.placement: str | None = None
        self.components: dict[str, list[int]] | None = None

    def set_placement(self, placement: str) -> Self:
        """Hybrid keys: ``"native"`` (one provider holds both halves), ``"split"`` (each half
        on a provider of its own, joined by the daemon) or ``"auto"`` (the default: native
        when a provider claims the algorithm, else split). See docs/hybrid.md."""
        self.placement = str_arg(placement, "placement")
        return self

    def set_component_providers(self, *, pq: int | list[int] | None = None,
                                classical: int | list[int] | None = None) -> Self:
        """Hybrid keys split across providers: the providers to try, in order, for the
        post-quantum half (ML-DSA, ML-KEM) and the classical one (ECDSA, Ed25519, RSA,
        X25519). Naming them asks for a split key."""
        chosen = {role: ids for role, ids in (("pq", pq), ("classical", classical))
                  if ids is not None}
        self.components = components_arg(chosen, "providers") or None
        return self

    def set_permissions(self, perms: KeyOperationPermission) -> Self:
        """Allowed operations (default: all the algorithm supports, never EXPORT)."""
        self.permissions = enum_arg(perms, KeyOperationPermission, "perms")
        return self

    def set_provider(self, provider_id: int) -> Self:
        """Provider that holds the key (e.g. generate inside the HSM)."""
        self.provider = int_arg(provider_id, "provider_id")
        return self


class ImportKeyParams(GenerateKeyParams):
    """Key material to import."""

    def __init__(self) -> None:
        super().__init__()
        self.material: bytes | None = None
        self.format: KeyFormat | None = None

    def set_material(self, material: bytes, fmt: KeyFormat) -> Self:
        """The encoded key and its format."""
        self.material = bytes_arg(material, "material")
        self.format = enum_arg(fmt, KeyFormat, "fmt")
        return self


class DeriveKeyParams(AlgorithmSetting, KeySetting):
    """Key derivation from a key with DERIVE: KDF (``"HKDF-SHA-256"``), input key, salt, info,
    output key type and length, permissions."""

    def __init__(self) -> None:
        self.algorithm = "HKDF-SHA-256"
        self.key: ResourceLike | None = None
        self.salt = b""
        self.info = b""
        self.length: int | None = None
        self.output_algorithm = "GENERIC-SECRET"
        self.permissions: KeyOperationPermission | None = None

    def set_salt(self, salt: bytes) -> Self:
        """HKDF salt."""
        self.salt = bytes_arg(salt, "salt")
        return self

    def set_info(self, info: bytes) -> Self:
        """HKDF info."""
        self.info = bytes_arg(info, "info")
        return self

    def set_output(self, algorithm: str, length: int | None = None) -> Self:
        """Type (and length) of the derived key, e.g. ``"AES-256"``."""
        self.output_algorithm = known_or_deferred(str_arg(algorithm, "algorithm"))
        self.length = optional_int_arg(length, "length")
        return self

    def set_permissions(self, perms: KeyOperationPermission) -> Self:
        """Permissions of the derived key."""
        self.permissions = enum_arg(perms, KeyOperationPermission, "perms")
        return self


def slot_info_from_wire(info: dict[str, Any]) -> KeySlotInfo:
    """Build a :class:`KeySlotInfo` from its wire form."""
    return KeySlotInfo(status=KeySlotStatus(info["status"]), algorithm=info.get("algorithm"),
                       provider=info.get("provider"),
                       compatible_providers=list(info.get("compatible_providers") or []),
                       permissions=KeyOperationPermission(info.get("permissions") or 0),
                       version=int(info.get("version") or 0), name=info.get("name", ""),
                       created=info.get("created"), updated=info.get("updated"))


class KeyManagementContext(OperationContext):
    """Key lifecycle operations (each one round trip, bounded by this context's timeout)."""

    def __init__(self, parent: ContextParent, config: KeyManagementContextConfig) -> None:
        super().__init__(parent, config)

    def close(self) -> None:
        """Nothing to free in the daemon; later calls fail."""
        self._closed = True

    def _guard(self, info: dict[str, Any]) -> CryptoResourceGuard:
        return CryptoResourceGuard._from_wire(self._channel, info)

    def load_key(self, slot: ResourceLike) -> CryptoResourceGuard:
        """Load a slot's key for use in several contexts."""
        return self._guard(self._call("key.load", {"slot": wire_rid(slot, "slot")}))

    def get_key_slot_info(self, slot: ResourceLike) -> KeySlotInfo:
        """Status, algorithm, provider and compatible providers of a key slot."""
        return slot_info_from_wire(self._call("key.slot_info", {"slot": wire_rid(slot, "slot")}))

    def generate_key(self, params: GenerateKeyParams) -> CryptoResourceGuard:
        """A new ephemeral key."""
        instance_arg(params, GenerateKeyParams, "params")
        if params.algorithm is None:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "GenerateKeyParams needs set_algorithm()")
        return self._guard(self._call("key.generate", {
            "algorithm": self._channel.canonical_algorithm(params.algorithm),
            "provider": params.provider,
            "permissions": None if params.permissions is None else int(params.permissions),
            **_placement(params)}))

    def import_key(self, params: ImportKeyParams) -> CryptoResourceGuard:
        """An ephemeral key from material."""
        instance_arg(params, ImportKeyParams, "params")
        if params.algorithm is None or params.material is None or params.format is None:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              "ImportKeyParams needs set_algorithm() and set_material()")
        return self._guard(self._call("key.import", {
            "algorithm": self._channel.canonical_algorithm(params.algorithm),
            "material": params.material,
            "format": params.format.value, "provider": params.provider,
            "permissions": None if params.permissions is None else int(params.permissions),
            **_placement(params)}))

    def persist_key(self, slot: ResourceLike, key: ResourceLike) -> KeySlotInfo:
        """Copy ``key`` into ``slot`` durably (the key stays usable)."""
        args = {"slot": wire_rid(slot, "slot"), "key": wire_rid(key, "key")}
        return slot_info_from_wire(self._call("key.persist", args))

    def clear_key_slot(self, slot: ResourceLike) -> None:
        """Empty a key slot (destroying a token/TPM copy)."""
        self._call("key.clear_slot", {"slot": wire_rid(slot, "slot")})

    def export_public_key(self, key: ResourceLike, fmt: KeyFormat = KeyFormat.SPKI_DER) -> bytes:
        """Public key of an asymmetric key or slot (SubjectPublicKeyInfo DER by default)."""
        args = {"key": wire_rid(key, "key"), "format": enum_arg(fmt, KeyFormat, "fmt").value}
        data: bytes = self._call("key.export_public", args)
        return data

    def export_key(self, key: ResourceLike, fmt: KeyFormat | None = None) -> bytes:
        """Secret or private material; only for keys that carry EXPORT."""
        args = {"key": wire_rid(key, "key"),
                "format": None if fmt is None else enum_arg(fmt, KeyFormat, "fmt").value}
        data: bytes = self._call("key.export", args)
        return data

    def derive_key(self, params: DeriveKeyParams) -> CryptoResourceGuard:
        """A new key derived from ``params.key``."""
        instance_arg(params, DeriveKeyParams, "params")
        if params.key is None or params.algorithm is None:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              "DeriveKeyParams needs set_key() and set_algorithm()")
        return self._guard(self._call("key.derive", {
            "algorithm": self._channel.canonical_algorithm(params.algorithm),
            "key": wire_rid(params.key, "key"),
            "salt": params.salt, "info": params.info, "length": params.length,
            "output_algorithm": self._channel.canonical_algorithm(params.output_algorithm),
            "permissions": None if params.permissions is None else int(params.permissions)}))

    def generate_random(self, length: int, provider: int | None = None) -> bytes:
        """Random bytes from the preferred provider (or from ``provider``)."""
        args: dict[str, Any] = {"length": int_arg(length, "length")}
        if provider is not None:
            args["provider"] = int_arg(provider, "provider")
        data: bytes = self._call("random.generate", args)
        return data


def _placement(params: GenerateKeyParams) -> dict[str, Any]:
    """The placement arguments of a hybrid key, only when set (older daemons never see
    them)."""
    args: dict[str, Any] = {}
    if params.placement is not None:
        args["placement"] = params.placement
    if params.components is not None:
        args["components"] = params.components
    return args
