"""Resource identifiers and the small value types shared by client, wire and daemon."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from cryptostack_core.wire.permissions import KeyOperationPermission


class ResourceType(enum.Enum):
    """Kinds of named or created resources."""

    KEY_SLOT = "KEY_SLOT"
    CERT_SLOT = "CERT_SLOT"
    VERIFICATION_TRUST_STORE = "VERIFICATION_TRUST_STORE"
    KEY = "KEY"
    CERTIFICATE = "CERTIFICATE"
    CRL = "CRL"


class ResourcePersistence(enum.Enum):
    """Whether a resource outlives the client that created it."""

    EPHEMERAL = "EPHEMERAL"
    PERSISTENT = "PERSISTENT"


class KeySlotStatus(enum.Enum):
    """Whether a key slot holds a key."""

    EMPTY = "EMPTY"
    OCCUPIED = "OCCUPIED"


class KeyFormat(enum.Enum):
    """Encodings for importing and exporting key material."""

    RAW = "RAW"
    SEED = "SEED"
    SPKI_DER = "SPKI_DER"
    PKCS8_DER = "PKCS8_DER"
    PEM = "PEM"


class CipherDirection(enum.Enum):
    """Encrypt or decrypt."""

    ENCRYPT = "ENCRYPT"
    DECRYPT = "DECRYPT"


class RevocationCheckPolicy(enum.Enum):
    """How certificate revocation is checked."""

    NONE = "NONE"
    CRL_ONLY = "CRL_ONLY"


class CertVerifyResult(enum.Enum):
    """Outcome of certificate path validation."""

    VALID = "VALID"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    REVOKED = "REVOKED"
    UNTRUSTED = "UNTRUSTED"
    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    REVOCATION_STATUS_UNKNOWN = "REVOCATION_STATUS_UNKNOWN"
    INVALID = "INVALID"


@dataclass(frozen=True)
class CryptoResourceId:
    """Opaque handle of a resource, valid on the connection that obtained it."""

    type: ResourceType
    handle: int
    name: str | None = field(default=None, compare=False)

    @property
    def resource_id(self) -> CryptoResourceId:
        """Itself; lets ids and guards be used interchangeably."""
        return self

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"CryptoResourceId({self.type.value}#{self.handle}{label})"


class KeyVersionState(enum.Enum):
    """Where one version of a slot's key stands."""

    PRIMARY = "PRIMARY"
    """The newest: what encryption, signing and sealing use."""
    ACTIVE = "ACTIVE"
    """An older version: decrypts, verifies, decapsulates, opens what was made under it."""
    DISABLED = "DISABLED"
    """Below the slot's minimum version: refused until the minimum is lowered."""
    RETIRED = "RETIRED"
    """Retired by an explicit call: its key is destroyed."""


@dataclass(frozen=True)
class KeyVersionInfo:
    """One version of a key slot."""

    version: int
    state: KeyVersionState
    algorithm: str
    provider: int
    permissions: KeyOperationPermission
    created: float
    updated: float


@dataclass(frozen=True)
class KeySlotInfo:
    """Metadata of a key slot, as returned by ``get_key_slot_info``. ``version`` is the
    primary version (0: empty); ``versions`` lists every version the slot holds, oldest
    first."""

    status: KeySlotStatus
    algorithm: str | None
    provider: int | None
    compatible_providers: list[int]
    permissions: KeyOperationPermission = KeyOperationPermission.NONE
    version: int = 0
    name: str = ""
    created: float | None = None
    updated: float | None = None
    versions: list[KeyVersionInfo] = field(default_factory=list)
    min_version: int = 0
    """Versions below this are disabled (0: none)."""
    head_version: int = 0
    """The highest version number the slot ever had (numbers are never reused)."""
    placement: str = "auto"
    """Hybrid key slots: ``split`` keeps the halves on providers of their own (``native``:
    one provider holds both; ``auto``: as the key comes)."""
    components: list[dict[str, Any]] = field(default_factory=list)
    """A split hybrid key's halves: ``role``, ``provider``, ``algorithm`` (``provider`` is
    then 0: no single provider holds the key); empty otherwise."""

    @property
    def primary_version(self) -> int:
        """The version new encryptions use (0: the slot is empty)."""
        return self.version
