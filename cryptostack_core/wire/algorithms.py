"""The one registry of algorithm names.

Every name that crosses the API is resolved here to its canonical spelling (as written in
API.md: ``SHA-256``, ``AES-256-GCM``, ``ML-DSA-65`` ...). Aliases are matched
case-insensitively and with ``-``, ``_``, ``/`` and spaces ignored, so ``sha256``,
``HMAC_SHA256`` and ``MLDSA65`` all resolve. Providers may register further algorithms.

Two roles share the registry:

* a *key algorithm* names what a key is (``AES-256``, ``ECDSA-P256``, ``GENERIC-SECRET``);
* an *operation algorithm* names what a context does (``AES-256-GCM``, ``ECDSA-P256``).

Some names are both (signature and MAC algorithms are also their key's type). An operation
algorithm lists the key algorithms it accepts in ``key_algorithms``.

The built-in names below are the project's shared vocabulary. A provider that brings an
algorithm of its own declares it with :meth:`Provider.algorithms()
<cryptostack_core.sdk.Provider.algorithms>`; the daemon registers it when the provider loads
(before it checks ``[[key_slots]]``) and serves every name to clients (the ``algorithms``
request), so applications need nothing but ``cryptostack-core`` to use it.
"""

from __future__ import annotations

import enum
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission as P


class Operation(enum.Enum):
    """What a provider is asked to do with an algorithm (the capability axis)."""

    HASH = "hash"
    ENCRYPT = "encrypt"
    DECRYPT = "decrypt"
    SIGN = "sign"
    VERIFY = "verify"
    ENCAPSULATE = "encapsulate"
    DECAPSULATE = "decapsulate"
    AGREE = "agree"
    DERIVE = "derive"
    RANDOM = "random"
    GENERATE_KEY = "generate_key"
    IMPORT_KEY = "import_key"


class AlgorithmKind(enum.Enum):
    """Family of an algorithm; decides which context type may use it."""

    HASH = "hash"
    CIPHER = "cipher"
    AEAD = "aead"
    STREAMING_AEAD = "streaming_aead"  # segmented AEAD for data of any size
    SIGNATURE = "signature"
    MAC = "mac"
    KEM = "kem"
    KEY_AGREEMENT = "key_agreement"
    KDF = "kdf"
    KEY = "key"  # a key type only (AES-256, GENERIC-SECRET, RSA-2048)
    RANDOM = "random"


class KeyClass(enum.Enum):
    """Whether a key algorithm is a secret key or a key pair."""

    SYMMETRIC = "symmetric"
    ASYMMETRIC = "asymmetric"


GCM_IV_SIZES = (8, 128)
"""AES-GCM IVs accepted, in bytes: shorter IVs collide after few messages under one key;
longer ones add nothing (GHASH folds them); 12 is the recommended length."""
GCM_TAG_SIZES = frozenset({4, 8, 12, 13, 14, 15, 16})
"""AES-GCM tag lengths accepted: exactly those NIST SP 800-38D section 5.2.1.2 allows (4 and
8 only for special applications, which is the caller's responsibility)."""
MIN_MAC_TAG = 10
"""Shortest truncated HMAC tag a verification may ask for (RFC 2104 section 5: 80 bits)."""
MAX_CONTEXT_STRING = 255
"""Longest context string of ML-DSA and SLH-DSA (FIPS 204, FIPS 205) and the composites."""
MAX_RANDOM = 1 << 20
"""Most random bytes one ``random.generate`` call returns."""


@dataclass(frozen=True)
class AlgorithmSpec:
    """Static facts about one algorithm. Sizes are in bytes; 0 means "not applicable" or
    "depends on the key".

    Examples: ``AlgorithmSpec("BLAKE2b-512", AlgorithmKind.HASH, digest_size=64,
    block_size=128)`` is a hash; a MAC whose name is also its key type::

        AlgorithmSpec("BLAKE2b-512-MAC", AlgorithmKind.MAC, key_class=KeyClass.SYMMETRIC,
                      key_size=64, signature_size=64, key_algorithms=("BLAKE2b-512-MAC",),
                      default_permissions=P.MAC | P.SIGN | P.VERIFY)
    """

    name: str
    """Canonical spelling, reported back to clients (``SHA-256``, ``AES-256-GCM``)."""
    kind: AlgorithmKind
    """Which context may use the name: HASH -> hash contexts; CIPHER/AEAD -> cipher
    contexts; SIGNATURE/MAC -> sign and verify contexts (a MAC is computed with
    ``create_signer`` and compared by the daemon); KEM -> KEM contexts; KEY_AGREEMENT ->
    agreement contexts; KDF -> ``derive_key``; RANDOM -> ``generate_random``; KEY -> a key
    type only (``AES-256``, ``RSA-2048``, ``GENERIC-SECRET``), usable by the operation
    algorithms that list it in their ``key_algorithms``."""
    aliases: tuple[str, ...] = ()
    """Other spellings; matching ignores case and ``-``, ``_``, ``/``, spaces."""
    key_class: KeyClass | None = None
    """Set when the name is also a key type: SYMMETRIC (a secret: RAW import/export) or
    ASYMMETRIC (a pair: public keys as SPKI_DER or RAW, private as PKCS8_DER/RAW/SEED).
    ``generate_key``/``import_key`` and key slots accept only names that have it."""
    default_permissions: P = P.NONE
    """What a key of this type may do when the application does not say: the permissions
    ``generate_key`` gives without ``set_permissions`` and a slot gets without
    ``permissions``. Never EXPORT (material leaves the daemon only when asked for)."""
    key_algorithms: tuple[str, ...] = ()
    """For an operation algorithm: the key types it accepts (a context refuses other keys
    with INVALID_ARGUMENT). Empty for operations without a key (hashes, RANDOM)."""
    key_size: int = 0
    digest_size: int = 0
    block_size: int = 0
    iv_size: int = 0
    tag_size: int = 0
    signature_size: int = 0
    """Largest signature or MAC (``get_signature_size``; DER ECDSA signatures vary)."""
    public_key_size: int = 0
    ciphertext_size: int = 0
    shared_secret_size: int = 0
    hash_algorithm: str = ""
    supports_context_string: bool = False
    """True when ``set_context`` applies (ML-DSA, SLH-DSA)."""
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)
    # Parameter limits: declared here once, enforced by the daemon for every provider (and
    # checked by providers called directly, with the same helpers below).
    iv_sizes: tuple[int, int] = (0, 0)
    """Shortest and longest IV or nonce a cipher accepts; (0, 0) means exactly ``iv_size``."""
    tag_sizes: frozenset[int] = frozenset()
    """Tag lengths an AEAD accepts (empty: only ``tag_size``)."""
    min_tag_size: int = 0
    """MACs: the shortest truncated tag a verification may ask for."""
    max_context_string: int = 0
    """Longest context string (with ``supports_context_string``)."""
    max_output: int = 0
    """RANDOM: most bytes one call returns."""

    def check_iv(self, length: int) -> None:
        """INVALID_ARGUMENT unless ``length`` is an IV length this cipher accepts."""
        low, high = self.iv_sizes if self.iv_sizes != (0, 0) else (self.iv_size, self.iv_size)
        if not low <= length <= high:
            wanted = (
                f"a {low}-byte IV"
                if low == high
                else f"an IV of {low} to {high} bytes ({self.iv_size} recommended)"
            )
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"{self.name} needs {wanted}, got {length}")

    def check_tag_length(self, length: int) -> None:
        """INVALID_ARGUMENT unless ``length`` is a tag length this AEAD accepts."""
        allowed = self.tag_sizes or frozenset({self.tag_size})
        if length not in allowed:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT,
                f"{self.name} tag length must be one of {sorted(allowed)} bytes, got {length}",
            )

    def check_context_string(self, context: bytes) -> None:
        """INVALID_ARGUMENT unless ``context`` is a context string this algorithm takes."""
        if context and not self.supports_context_string:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"{self.name} takes no context string")
        if len(context) > self.max_context_string and self.supports_context_string:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT,
                f"{self.name} context strings are at most "
                f"{self.max_context_string} bytes, got {len(context)}",
            )

    def to_wire(self) -> dict[str, object]:
        """The facts as plain data (the ``algorithms`` request, ``cryptostack algorithms``)."""
        out: dict[str, object] = {
            "name": self.name,
            "kind": self.kind.value,
            "aliases": list(self.aliases),
            "key_class": self.key_class.value if self.key_class else None,
            "default_permissions": int(self.default_permissions),
            "key_algorithms": list(self.key_algorithms),
        }
        for size in (
            "key_size",
            "digest_size",
            "block_size",
            "iv_size",
            "tag_size",
            "signature_size",
            "public_key_size",
            "ciphertext_size",
            "shared_secret_size",
        ):
            if getattr(self, size):
                out[size] = getattr(self, size)
        if self.hash_algorithm:
            out["hash_algorithm"] = self.hash_algorithm
        if self.supports_context_string:
            out["supports_context_string"] = True
        return out

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> AlgorithmSpec:
        """Inverse of :meth:`to_wire` (unknown fields are ignored, for newer daemons)."""
        sizes: dict[str, Any] = {
            k: int(data[k])
            for k in (
                "key_size",
                "digest_size",
                "block_size",
                "iv_size",
                "tag_size",
                "signature_size",
                "public_key_size",
                "ciphertext_size",
                "shared_secret_size",
            )
            if data.get(k)
        }
        key_class = data.get("key_class")
        return cls(
            str(data["name"]),
            AlgorithmKind(data["kind"]),
            aliases=tuple(str(a) for a in data.get("aliases") or ()),
            key_class=KeyClass(key_class) if key_class else None,
            default_permissions=P(int(data.get("default_permissions") or 0)),
            key_algorithms=tuple(str(k) for k in data.get("key_algorithms") or ()),
            hash_algorithm=str(data.get("hash_algorithm") or ""),
            supports_context_string=bool(data.get("supports_context_string")),
            **sizes,
        )

    @property
    def is_key_algorithm(self) -> bool:
        """True when keys of this name exist."""
        return self.key_class is not None

    @property
    def needs_key(self) -> bool:
        """True for operation algorithms that take a key."""
        return bool(self.key_algorithms)


def _normalise(name: str) -> str:
    return re.sub(r"[-_/\s]", "", name).upper()


class AlgorithmRegistry:
    """Canonical names and aliases; thread-safe for registration at provider load."""

    def __init__(self) -> None:
        self._specs: dict[str, AlgorithmSpec] = {}
        self._index: dict[str, str] = {}
        self._lock = threading.Lock()

    def register(self, spec: AlgorithmSpec) -> None:
        """Add an algorithm; re-registering an identical spec is a no-op.

        Raises ValueError when the name is registered with different facts, or when the
        name or an alias already spells another algorithm (nothing is changed then).
        """
        with self._lock:
            existing = self._specs.get(spec.name)
            if existing is not None and existing != spec:
                raise ValueError(f"algorithm {spec.name!r} is already registered with different facts")
            keys = [_normalise(alias) for alias in (spec.name, *spec.aliases)]
            for alias, key in zip((spec.name, *spec.aliases), keys):
                owner = self._index.get(key)
                if owner is not None and owner != spec.name:
                    raise ValueError(f"alias {alias!r} already names {owner!r}")
            if existing is None:
                self._specs[spec.name] = spec
            for key in keys:
                self._index[key] = spec.name

    def add_alias(self, canonical: str, alias: str) -> None:
        """Add one more spelling for a registered algorithm."""
        with self._lock:
            if canonical not in self._specs:
                raise KeyError(canonical)
            key = _normalise(alias)
            owner = self._index.get(key)
            if owner is not None and owner != canonical:
                raise ValueError(f"alias {alias!r} already names {owner!r}")
            self._index[key] = canonical

    def find(self, name: str) -> AlgorithmSpec | None:
        """The spec for ``name`` or an alias of it, else None."""
        spec = self._specs.get(name)  # a canonical name: no normalising needed
        if spec is not None:
            return spec
        if not isinstance(name, str):
            return None
        canonical = self._index.get(_normalise(name))
        return self._specs.get(canonical) if canonical else None

    def get(self, name: str) -> AlgorithmSpec:
        """The spec for ``name``; raises ``UNSUPPORTED_ALGORITHM`` for unknown names."""
        spec = self.find(name)
        if spec is None:
            raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"unknown algorithm {name!r}")
        return spec

    def canonical(self, name: str) -> str:
        """Canonical spelling of ``name``."""
        return self.get(name).name

    def names(self) -> list[str]:
        """All canonical names, sorted."""
        return sorted(self._specs)

    def specs(self) -> list[AlgorithmSpec]:
        """Every registered spec, sorted by name."""
        with self._lock:
            return [self._specs[n] for n in sorted(self._specs)]

    def key_algorithm_accepted(self, operation_algorithm: str, key_algorithm: str) -> bool:
        """Whether a key of ``key_algorithm`` may be used by ``operation_algorithm``."""
        spec = self.get(operation_algorithm)
        return key_algorithm in spec.key_algorithms


REGISTRY = AlgorithmRegistry()
"""The process-wide registry used by client and daemon."""


def canonical_name(name: str) -> str:
    """Resolve an algorithm name or alias to its canonical spelling."""
    return REGISTRY.canonical(name)


def known_or_deferred(name: str) -> str:
    """The canonical spelling when this process knows ``name``, else ``name`` itself (a
    provider's own algorithm, resolved with the daemon later). Not a non-empty string:
    UNSUPPORTED_ALGORITHM."""
    if not isinstance(name, str) or not name.strip():
        raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"unknown algorithm {name!r}")
    spec = REGISTRY.find(name)
    return spec.name if spec is not None else name


def _register_builtins(reg: AlgorithmRegistry) -> None:
    K = AlgorithmKind
    sym, asym = KeyClass.SYMMETRIC, KeyClass.ASYMMETRIC
    # --- hashes
    for name, size, block in [
        ("SHA-224", 28, 64),
        ("SHA-256", 32, 64),
        ("SHA-384", 48, 128),
        ("SHA-512", 64, 128),
        ("SHA3-224", 28, 144),
        ("SHA3-256", 32, 136),
        ("SHA3-384", 48, 104),
        ("SHA3-512", 64, 72),
    ]:
        reg.register(AlgorithmSpec(name, K.HASH, digest_size=size, block_size=block))
    # --- symmetric key types
    for bits in (128, 192, 256):
        reg.register(
            AlgorithmSpec(
                f"AES-{bits}",
                K.KEY,
                key_class=sym,
                key_size=bits // 8,
                default_permissions=P.ENCRYPT | P.DECRYPT | P.WRAP | P.UNWRAP,
            )
        )
    reg.register(
        AlgorithmSpec(
            "GENERIC-SECRET",
            K.KEY,
            aliases=("SECRET", "SHARED-SECRET"),
            key_class=sym,
            default_permissions=P.DERIVE | P.MAC | P.SIGN | P.VERIFY,
        )
    )
    # --- ciphers
    for bits in (128, 192, 256):
        reg.register(
            AlgorithmSpec(
                f"AES-{bits}-CBC",
                K.CIPHER,
                key_algorithms=(f"AES-{bits}",),
                key_size=bits // 8,
                block_size=16,
                iv_size=16,
            )
        )
        reg.register(
            AlgorithmSpec(
                f"AES-{bits}-GCM",
                K.AEAD,
                key_algorithms=(f"AES-{bits}",),
                key_size=bits // 8,
                block_size=16,
                iv_size=12,
                tag_size=16,
                iv_sizes=GCM_IV_SIZES,
                tag_sizes=GCM_TAG_SIZES,
            )
        )
        reg.register(
            AlgorithmSpec(
                f"AES-{bits}-CTR",
                K.CIPHER,
                key_algorithms=(f"AES-{bits}",),
                key_size=bits // 8,
                block_size=1,
                iv_size=16,
            )
        )
        reg.register(
            AlgorithmSpec(
                f"AES-{bits}-CFB",
                K.CIPHER,
                key_algorithms=(f"AES-{bits}",),
                key_size=bits // 8,
                block_size=1,
                iv_size=16,
            )
        )
    reg.register(
        AlgorithmSpec(
            "ChaCha20-Poly1305",
            K.AEAD,
            aliases=("CHACHA20-POLY1305",),
            key_class=sym,
            default_permissions=P.ENCRYPT | P.DECRYPT | P.WRAP | P.UNWRAP,
            key_algorithms=("ChaCha20-Poly1305",),
            key_size=32,
            block_size=1,
            iv_size=12,
            tag_size=16,
        )
    )
    # --- streaming AEAD (Tink's AES-GCM-HKDF streaming; docs/streaming-aead.md)
    for bits in (128, 256):
        for segment, label in ((4096, "4KB"), (1 << 20, "1MB")):
            reg.register(
                AlgorithmSpec(
                    f"AES-{bits}-GCM-HKDF-{label}",
                    K.STREAMING_AEAD,
                    key_algorithms=(f"AES-{bits}",),
                    key_size=bits // 8,
                    tag_size=16,
                    extra={"segment_size": segment, "aead": f"AES-{bits}-GCM", "kdf": "HKDF-SHA-256"},
                )
            )
    # --- MACs (also key types)
    for h, size, block in [("SHA-256", 32, 64), ("SHA-384", 48, 128), ("SHA-512", 64, 128)]:
        name = f"HMAC-{h}"
        reg.register(
            AlgorithmSpec(
                name,
                K.MAC,
                key_class=sym,
                key_size=size,
                digest_size=size,
                block_size=block,
                signature_size=size,
                hash_algorithm=h,
                min_tag_size=MIN_MAC_TAG,
                default_permissions=P.MAC | P.SIGN | P.VERIFY,
                key_algorithms=(name, "GENERIC-SECRET"),
            )
        )
    # --- KDF
    for h, size in [("SHA-256", 32), ("SHA-384", 48), ("SHA-512", 64)]:
        reg.register(
            AlgorithmSpec(
                f"HKDF-{h}",
                K.KDF,
                digest_size=size,
                hash_algorithm=h,
                key_algorithms=("GENERIC-SECRET", f"HMAC-{h}", "AES-128", "AES-192", "AES-256"),
            )
        )
    # --- elliptic curves and EdDSA
    reg.register(
        AlgorithmSpec(
            "ECDSA-P256",
            K.SIGNATURE,
            aliases=("ECDSA-SHA256", "P-256", "SECP256R1", "ECDSA-P-256"),
            key_class=asym,
            default_permissions=P.SIGN | P.VERIFY | P.AGREE | P.DERIVE,
            key_algorithms=("ECDSA-P256", "ECDH-P256"),
            signature_size=72,
            public_key_size=65,
            hash_algorithm="SHA-256",
        )
    )
    reg.register(
        AlgorithmSpec(
            "ECDSA-P384",
            K.SIGNATURE,
            aliases=("ECDSA-SHA384", "P-384", "SECP384R1", "ECDSA-P-384"),
            key_class=asym,
            default_permissions=P.SIGN | P.VERIFY | P.AGREE | P.DERIVE,
            key_algorithms=("ECDSA-P384",),
            signature_size=104,
            public_key_size=97,
            hash_algorithm="SHA-384",
        )
    )
    reg.register(
        AlgorithmSpec(
            "ECDH-P256",
            K.KEY_AGREEMENT,
            aliases=("ECDH-P-256",),
            key_class=asym,
            default_permissions=P.AGREE | P.DERIVE,
            key_algorithms=("ECDH-P256", "ECDSA-P256"),
            public_key_size=65,
            shared_secret_size=32,
        )
    )
    reg.register(
        AlgorithmSpec(
            "Ed25519",
            K.SIGNATURE,
            aliases=("EDDSA-ED25519",),
            key_class=asym,
            default_permissions=P.SIGN | P.VERIFY,
            key_algorithms=("Ed25519",),
            signature_size=64,
            public_key_size=32,
        )
    )
    reg.register(
        AlgorithmSpec(
            "X25519",
            K.KEY_AGREEMENT,
            key_class=asym,
            default_permissions=P.AGREE | P.DERIVE,
            key_algorithms=("X25519",),
            public_key_size=32,
            shared_secret_size=32,
        )
    )
    # --- RSA: key types by modulus size, one PSS signature algorithm
    rsa_keys = tuple(f"RSA-{bits}" for bits in (2048, 3072, 4096))
    for bits in (2048, 3072, 4096):
        reg.register(
            AlgorithmSpec(
                f"RSA-{bits}",
                K.KEY,
                key_class=asym,
                key_size=bits // 8,
                signature_size=bits // 8,
                default_permissions=P.SIGN | P.VERIFY,
            )
        )
    reg.register(
        AlgorithmSpec(
            "RSA-PSS-SHA256",
            K.SIGNATURE,
            aliases=("RSASSA-PSS-SHA256", "PS256"),
            key_algorithms=rsa_keys,
            hash_algorithm="SHA-256",
        )
    )
    # --- ML-DSA (FIPS 204) and ML-KEM (FIPS 203)
    for level, pk, sig in [(44, 1312, 2420), (65, 1952, 3309), (87, 2592, 4627)]:
        name = f"ML-DSA-{level}"
        reg.register(
            AlgorithmSpec(
                name,
                K.SIGNATURE,
                aliases=(f"MLDSA{level}", f"Dilithium-ML-DSA-{level}"),
                key_class=asym,
                default_permissions=P.SIGN | P.VERIFY,
                key_algorithms=(name,),
                signature_size=sig,
                public_key_size=pk,
                supports_context_string=True,
                max_context_string=MAX_CONTEXT_STRING,
            )
        )
    for level, pk, ct in [(512, 800, 768), (768, 1184, 1088), (1024, 1568, 1568)]:
        name = f"ML-KEM-{level}"
        reg.register(
            AlgorithmSpec(
                name,
                K.KEM,
                aliases=(f"MLKEM{level}",),
                key_class=asym,
                default_permissions=P.ENCAPSULATE | P.DECAPSULATE,
                key_algorithms=(name,),
                public_key_size=pk,
                ciphertext_size=ct,
                shared_secret_size=32,
            )
        )
    # --- SLH-DSA (FIPS 205), the twelve pure parameter sets
    slh_sizes = {
        "128s": (32, 7856),
        "128f": (32, 17088),
        "192s": (48, 16224),
        "192f": (48, 35664),
        "256s": (64, 29792),
        "256f": (64, 49856),
    }
    for hash_family in ("SHA2", "SHAKE"):
        for variant, (pk, sig) in slh_sizes.items():
            name = f"SLH-DSA-{hash_family}-{variant}"
            reg.register(
                AlgorithmSpec(
                    name,
                    K.SIGNATURE,
                    aliases=(
                        f"SLH_DSA_PURE_{hash_family}_{variant.upper()}",
                        f"SPHINCS+-{hash_family}-{variant}-simple",
                    ),
                    key_class=asym,
                    default_permissions=P.SIGN | P.VERIFY,
                    key_algorithms=(name,),
                    signature_size=sig,
                    public_key_size=pk,
                    supports_context_string=True,
                    max_context_string=MAX_CONTEXT_STRING,
                )
            )
    for level, pk, sig in [(512, 897, 752), (1024, 1793, 1462)]:
        name = f"Falcon-{level}"
        reg.register(
            AlgorithmSpec(
                name,
                K.SIGNATURE,
                key_class=asym,
                default_permissions=P.SIGN | P.VERIFY,
                key_algorithms=(name,),
                signature_size=sig,
                public_key_size=pk,
            )
        )
    # --- hybrid post-quantum: the constructions live in cryptostack_core.hybrid
    for name, aliases, shared in [
        ("X-Wing", ("XWING-KEM",), 32),
        ("X25519MLKEM768", ("X25519-ML-KEM-768",), 64),
    ]:
        reg.register(
            AlgorithmSpec(
                name,
                K.KEM,
                aliases=aliases,
                key_class=asym,
                default_permissions=P.ENCAPSULATE | P.DECAPSULATE,
                key_algorithms=(name,),
                public_key_size=1216,
                ciphertext_size=1120,
                shared_secret_size=shared,
            )
        )
    # Composite ML-DSA (draft-ietf-lamps-pq-composite-sigs): level, traditional half,
    # pre-hash, public key size (0: varies with the RSA encoding), longest signature.
    for level, pairing, prehash, pk, sig in [
        (44, "RSA2048-PSS", "SHA256", 0, 2676),
        (44, "RSA2048-PKCS15", "SHA256", 0, 2676),
        (44, "Ed25519", "SHA512", 1344, 2484),
        (44, "ECDSA-P256", "SHA256", 1377, 2492),
        (65, "RSA3072-PSS", "SHA512", 0, 3693),
        (65, "RSA3072-PKCS15", "SHA512", 0, 3693),
        (65, "RSA4096-PSS", "SHA512", 0, 3821),
        (65, "RSA4096-PKCS15", "SHA512", 0, 3821),
        (65, "ECDSA-P256", "SHA512", 2017, 3381),
        (65, "ECDSA-P384", "SHA512", 2049, 3413),
        (65, "ECDSA-brainpoolP256r1", "SHA512", 2017, 3381),
        (65, "Ed25519", "SHA512", 1984, 3373),
        (87, "ECDSA-P384", "SHA512", 2689, 4731),
        (87, "ECDSA-brainpoolP384r1", "SHA512", 2689, 4731),
        (87, "Ed448", "SHAKE256", 2649, 4741),
        (87, "RSA3072-PSS", "SHA512", 0, 5011),
        (87, "RSA4096-PSS", "SHA512", 0, 5139),
        (87, "ECDSA-P521", "SHA512", 2725, 4766),
    ]:
        name = f"ML-DSA-{level}-{pairing}-{prehash}"
        reg.register(
            AlgorithmSpec(
                name,
                K.SIGNATURE,
                aliases=(f"id-MLDSA{level}-{pairing}-{prehash}", f"ML-DSA-{level}-{pairing}"),
                key_class=asym,
                default_permissions=P.SIGN | P.VERIFY,
                key_algorithms=(name,),
                signature_size=sig,
                public_key_size=pk,
                supports_context_string=True,
                max_context_string=MAX_CONTEXT_STRING,
            )
        )
    reg.register(AlgorithmSpec("RANDOM", K.RANDOM, aliases=("DRBG", "RNG"), max_output=MAX_RANDOM))


_register_builtins(REGISTRY)
