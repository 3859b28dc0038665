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
    AsyncOperationContext,
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
from cryptostack_core.wire.algorithms import known_or_deferred
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission
from cryptostack_core.wire.resources import (
    KeyFormat,
    KeySlotInfo,
    KeySlotStatus,
    KeyVersionInfo,
    KeyVersionState,
)


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

    def set_component_providers(
        self, *, pq: int | list[int] | None = None, classical: int | list[int] | None = None
    ) -> Self:
        """Hybrid keys split across providers: the providers to try, in order, for the
        post-quantum half (ML-DSA, ML-KEM) and the classical one (ECDSA, Ed25519, RSA,
        X25519). Naming them asks for a split key."""
        chosen = {role: ids for role, ids in (("pq", pq), ("classical", classical)) if ids is not None}
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
    versions = [
        KeyVersionInfo(
            version=int(v["version"]),
            state=KeyVersionState(v["state"]),
            algorithm=str(v["algorithm"]),
            provider=int(v["provider"]),
            permissions=KeyOperationPermission(v.get("permissions") or 0),
            created=float(v["created"]),
            updated=float(v["updated"]),
        )
        for v in info.get("versions") or []
    ]
    return KeySlotInfo(
        status=KeySlotStatus(info["status"]),
        algorithm=info.get("algorithm"),
        provider=info.get("provider"),
        compatible_providers=list(info.get("compatible_providers") or []),
        permissions=KeyOperationPermission(info.get("permissions") or 0),
        version=int(info.get("version") or 0),
        name=info.get("name", ""),
        created=info.get("created"),
        updated=info.get("updated"),
        versions=versions,
        min_version=int(info.get("min_version") or 0),
        head_version=int(info.get("head_version") or 0),
        placement=str(info.get("placement") or "auto"),
        components=[dict(c) for c in info.get("components") or ()],
    )


def _version(version: object) -> int:
    number = int_arg(version, "version")
    if number < 0:
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"version must be a non-negative int, got {number}")
    return number


class KeyManagementCore(ContextCore):
    """The key-management plans (blocking and asyncio); each call is one round trip,
    bounded by the context's timeout."""

    def _p_close(self) -> Plan[None]:
        """Nothing to free in the daemon; later calls fail."""
        self._closed = True
        return
        yield  # a plan without requests

    def _p_load_key(self, slot: ResourceLike, version: int | None) -> Plan[dict[str, Any]]:
        args: dict[str, Any] = {"slot": wire_rid(slot, "slot")}
        if version is not None:
            args["version"] = _version(version)
        info: dict[str, Any] = yield from self._call("key.load", args)
        return info

    def _p_slot_info(self, slot: ResourceLike) -> Plan[KeySlotInfo]:
        info = yield from self._call("key.slot_info", {"slot": wire_rid(slot, "slot")})
        return slot_info_from_wire(info)

    def _p_generate_key(self, params: GenerateKeyParams) -> Plan[dict[str, Any]]:
        instance_arg(params, GenerateKeyParams, "params")
        if params.algorithm is None:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "GenerateKeyParams needs set_algorithm()")
        algorithm = yield from self._channel._p_canonical(params.algorithm)
        info: dict[str, Any] = yield from self._call(
            "key.generate",
            {
                "algorithm": algorithm,
                "provider": params.provider,
                "permissions": None if params.permissions is None else int(params.permissions),
                **_placement(params),
            },
        )
        return info

    def _p_import_key(self, params: ImportKeyParams) -> Plan[dict[str, Any]]:
        instance_arg(params, ImportKeyParams, "params")
        if params.algorithm is None or params.material is None or params.format is None:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, "ImportKeyParams needs set_algorithm() and set_material()"
            )
        algorithm = yield from self._channel._p_canonical(params.algorithm)
        info: dict[str, Any] = yield from self._call(
            "key.import",
            {
                "algorithm": algorithm,
                "material": params.material,
                "format": params.format.value,
                "provider": params.provider,
                "permissions": None if params.permissions is None else int(params.permissions),
                **_placement(params),
            },
        )
        return info

    def _p_persist_key(self, slot: ResourceLike, key: ResourceLike) -> Plan[KeySlotInfo]:
        info = yield from self._call(
            "key.persist", {"slot": wire_rid(slot, "slot"), "key": wire_rid(key, "key")}
        )
        return slot_info_from_wire(info)

    def _p_retire_key_version(self, slot: ResourceLike, version: int) -> Plan[KeySlotInfo]:
        info = yield from self._call(
            "key.retire_version", {"slot": wire_rid(slot, "slot"), "version": _version(version)}
        )
        return slot_info_from_wire(info)

    def _p_set_minimum_version(self, slot: ResourceLike, version: int) -> Plan[KeySlotInfo]:
        info = yield from self._call(
            "key.set_minimum_version", {"slot": wire_rid(slot, "slot"), "version": _version(version)}
        )
        return slot_info_from_wire(info)

    def _p_clear_key_slot(self, slot: ResourceLike) -> Plan[None]:
        yield from self._call("key.clear_slot", {"slot": wire_rid(slot, "slot")})

    def _p_export_public_key(self, key: ResourceLike, fmt: KeyFormat) -> Plan[bytes]:
        args = {"key": wire_rid(key, "key"), "format": enum_arg(fmt, KeyFormat, "fmt").value}
        data: bytes = yield from self._call("key.export_public", args)
        return data

    def _p_export_key(self, key: ResourceLike, fmt: KeyFormat | None) -> Plan[bytes]:
        args = {
            "key": wire_rid(key, "key"),
            "format": None if fmt is None else enum_arg(fmt, KeyFormat, "fmt").value,
        }
        data: bytes = yield from self._call("key.export", args)
        return data

    def _p_derive_key(self, params: DeriveKeyParams) -> Plan[dict[str, Any]]:
        instance_arg(params, DeriveKeyParams, "params")
        if params.key is None or params.algorithm is None:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, "DeriveKeyParams needs set_key() and set_algorithm()"
            )
        key = wire_rid(params.key, "key")
        algorithm = yield from self._channel._p_canonical(params.algorithm)
        output = yield from self._channel._p_canonical(params.output_algorithm)
        info: dict[str, Any] = yield from self._call(
            "key.derive",
            {
                "algorithm": algorithm,
                "key": key,
                "salt": params.salt,
                "info": params.info,
                "length": params.length,
                "output_algorithm": output,
                "permissions": None if params.permissions is None else int(params.permissions),
            },
        )
        return info

    def _p_generate_random(self, length: int, provider: int | None) -> Plan[bytes]:
        args: dict[str, Any] = {"length": int_arg(length, "length")}
        if provider is not None:
            args["provider"] = int_arg(provider, "provider")
        data: bytes = yield from self._call("random.generate", args)
        return data


class KeyManagementContext(KeyManagementCore, OperationContext):
    """Key lifecycle operations (each one round trip, bounded by this context's timeout)."""

    def __init__(self, parent: ContextParent, config: KeyManagementContextConfig) -> None:
        super().__init__(parent, config)

    def _guard(self, info: dict[str, Any]) -> CryptoResourceGuard:
        return CryptoResourceGuard._from_wire(self._channel, info)

    def load_key(self, slot: ResourceLike, version: int | None = None) -> CryptoResourceGuard:
        """Load a slot's key for use in several contexts: its primary version, or
        ``version``. An older version may only decrypt, verify, decapsulate (and agree);
        ``KEY_VERSION_RETIRED`` names a version that was retired or is below the slot's
        minimum. A loaded key keeps working until released, whatever happens to the slot."""
        return self._guard(self._run(self._p_load_key(slot, version)))

    def get_key_slot_info(self, slot: ResourceLike) -> KeySlotInfo:
        """Status, algorithm, provider, compatible providers and versions of a key slot."""
        return self._run(self._p_slot_info(slot))

    def generate_key(self, params: GenerateKeyParams) -> CryptoResourceGuard:
        """A new ephemeral key."""
        return self._guard(self._run(self._p_generate_key(params)))

    def import_key(self, params: ImportKeyParams) -> CryptoResourceGuard:
        """An ephemeral key from material."""
        return self._guard(self._run(self._p_import_key(params)))

    def persist_key(self, slot: ResourceLike, key: ResourceLike) -> KeySlotInfo:
        """Copy ``key`` into ``slot`` durably as a new version, which becomes the primary
        (``key`` stays usable; older versions stay usable to decrypt and verify until
        retired). Returns the slot's info; ``.version`` is the version this call made (with
        several writers another may be primary already: see ``.versions``)."""
        return self._run(self._p_persist_key(slot, key))

    def retire_key_version(self, slot: ResourceLike, version: int) -> KeySlotInfo:
        """Retire an older version of a slot's key (audited): it is destroyed, and data
        protected under it can no longer be decrypted here (``KEY_VERSION_RETIRED``). Keys
        and contexts already holding it keep working until released. The primary version
        cannot be retired (``INVALID_STATE``): persist a new one first."""
        return self._run(self._p_retire_key_version(slot, version))

    def set_minimum_version(self, slot: ResourceLike, version: int) -> KeySlotInfo:
        """Refuse the versions below ``version`` (0: none) without destroying them; the
        minimum may be lowered again. At most the primary version (audited)."""
        return self._run(self._p_set_minimum_version(slot, version))

    def clear_key_slot(self, slot: ResourceLike) -> None:
        """Empty a key slot: every version is removed (audited), and token/TPM copies are
        destroyed once no loaded key or open context uses them."""
        self._run(self._p_clear_key_slot(slot))

    def export_public_key(self, key: ResourceLike, fmt: KeyFormat = KeyFormat.SPKI_DER) -> bytes:
        """Public key of an asymmetric key or slot (SubjectPublicKeyInfo DER by default)."""
        return self._run(self._p_export_public_key(key, fmt))

    def export_key(self, key: ResourceLike, fmt: KeyFormat | None = None) -> bytes:
        """Secret or private material; only for keys that carry EXPORT."""
        return self._run(self._p_export_key(key, fmt))

    def derive_key(self, params: DeriveKeyParams) -> CryptoResourceGuard:
        """A new key derived from ``params.key``."""
        return self._guard(self._run(self._p_derive_key(params)))

    def generate_random(self, length: int, provider: int | None = None) -> bytes:
        """Random bytes from the preferred provider (or from ``provider``)."""
        return self._run(self._p_generate_random(length, provider))


class AsyncKeyManagementContext(KeyManagementCore, AsyncOperationContext):
    """:class:`KeyManagementContext` for asyncio stacks (the same calls, awaited)."""

    def _guard(self, info: dict[str, Any]) -> AsyncCryptoResourceGuard:
        return AsyncCryptoResourceGuard._from_wire(self._channel, info)

    async def load_key(self, slot: ResourceLike, version: int | None = None) -> AsyncCryptoResourceGuard:
        """Load a slot's key (its primary version, or ``version``); see
        :meth:`KeyManagementContext.load_key`."""
        return self._guard(await self._run(self._p_load_key(slot, version)))

    async def get_key_slot_info(self, slot: ResourceLike) -> KeySlotInfo:
        """Status, algorithm, provider, compatible providers and versions of a key slot."""
        return await self._run(self._p_slot_info(slot))

    async def generate_key(self, params: GenerateKeyParams) -> AsyncCryptoResourceGuard:
        """A new ephemeral key."""
        return self._guard(await self._run(self._p_generate_key(params)))

    async def import_key(self, params: ImportKeyParams) -> AsyncCryptoResourceGuard:
        """An ephemeral key from material."""
        return self._guard(await self._run(self._p_import_key(params)))

    async def persist_key(self, slot: ResourceLike, key: ResourceLike) -> KeySlotInfo:
        """Copy ``key`` into ``slot`` durably as a new, primary version; see
        :meth:`KeyManagementContext.persist_key`."""
        return await self._run(self._p_persist_key(slot, key))

    async def retire_key_version(self, slot: ResourceLike, version: int) -> KeySlotInfo:
        """Retire an older version of a slot's key; see
        :meth:`KeyManagementContext.retire_key_version`."""
        return await self._run(self._p_retire_key_version(slot, version))

    async def set_minimum_version(self, slot: ResourceLike, version: int) -> KeySlotInfo:
        """Refuse the versions below ``version``; see
        :meth:`KeyManagementContext.set_minimum_version`."""
        return await self._run(self._p_set_minimum_version(slot, version))

    async def clear_key_slot(self, slot: ResourceLike) -> None:
        """Empty a key slot: every version is removed (audited)."""
        await self._run(self._p_clear_key_slot(slot))

    async def export_public_key(self, key: ResourceLike, fmt: KeyFormat = KeyFormat.SPKI_DER) -> bytes:
        """Public key of an asymmetric key or slot (SubjectPublicKeyInfo DER by default)."""
        return await self._run(self._p_export_public_key(key, fmt))

    async def export_key(self, key: ResourceLike, fmt: KeyFormat | None = None) -> bytes:
        """Secret or private material; only for keys that carry EXPORT."""
        return await self._run(self._p_export_key(key, fmt))

    async def derive_key(self, params: DeriveKeyParams) -> AsyncCryptoResourceGuard:
        """A new key derived from ``params.key``."""
        return self._guard(await self._run(self._p_derive_key(params)))

    async def generate_random(self, length: int, provider: int | None = None) -> bytes:
        """Random bytes from the preferred provider (or from ``provider``)."""
        return await self._run(self._p_generate_random(length, provider))


def _placement(params: GenerateKeyParams) -> dict[str, Any]:
    """The placement arguments of a hybrid key, only when set (older daemons never see
    them)."""
    args: dict[str, Any] = {}
    if params.placement is not None:
        args["placement"] = params.placement
    if params.components is not None:
        args["components"] = params.components
    return args
