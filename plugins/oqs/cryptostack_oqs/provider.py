"""The oqs provider: post-quantum KEMs and signatures from liboqs, through liboqs-python.

Algorithms (canonical names), offered when the loaded liboqs has them enabled:
ML-KEM-512/768/1024 (encapsulate, decapsulate), ML-DSA-44/65/87, the twelve pure SLH-DSA
parameter sets SLH-DSA-{SHA2,SHAKE}-{128,192,256}{s,f}, Falcon-512 and Falcon-1024 (sign,
verify); key generation and import for each. liboqs's own spellings
(``SLH_DSA_PURE_SHA2_128S``...) are registry aliases.

Loading (see :mod:`.library`): ``start()`` looks for the native library before importing
liboqs-python and raises PROVIDER_UNAVAILABLE, with install instructions, when it is
missing or not from the 0.16 series -- in well under a second, never letting
liboqs-python's download-and-build fallback run. Options:

``install_path`` (str)
    liboqs install prefix (``<prefix>/lib/liboqs.so``); overrides ``OQS_INSTALL_PATH``.
``system_search`` (bool, default true)
    Also look in the linker cache, ``LD_LIBRARY_PATH`` and standard prefixes. With false,
    only ``install_path``/``OQS_INSTALL_PATH`` counts.

Sizes (``signature_size``) come from liboqs: exact for ML-DSA and SLH-DSA; for Falcon the
*maximum* (752 / 1462 bytes) since Falcon signatures vary in length (~655 / ~1270).
Signing is hedged/randomised as liboqs does it (ML-DSA, Falcon; SLH-DSA uses its
randomiser too), so signatures of one message differ.

Threading: every call uses its own liboqs object; there is no global lock, and SLH-DSA
"s" signing (0.4 s to several seconds) runs in the daemon's worker threads alongside other
contexts. ``run_inline`` is True only for calls measured in tens of microseconds: ML-KEM
encapsulation/decapsulation (~15-20 µs), sign/verify updates (buffering), and ML-DSA or
Falcon verification (~30-45 µs); signing, key generation and everything SLH-DSA go to
worker threads (a worker hop costs a few hundred microseconds on a small VM).

Key formats are described in :mod:`.keyformats`; ML-DSA SEED import is not supported
(liboqs has no public seed expansion). Key pairs persist as secret blobs
(``StoredKey(secret=True)``) that the key store wraps like any software key.
KEM shared secrets are GENERIC-SECRET keys, extractable so the daemon can copy them to a
provider that derives from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from cryptostack_core.sdk import (
    Capability,
    CryptoError,
    ErrorCode,
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
    invalid_argument,
)
from cryptostack_core.sdk.options import option, parse_options

from . import keyformats, keys, library, operations
from .mechanisms import Family, Mechanism, discover


@dataclass(frozen=True, kw_only=True)
class OQSOptions:
    """The provider's options (checked by the SDK's :func:`parse_options`)."""

    install_path: str | None = option(None, doc="a liboqs install prefix to load first")
    system_search: bool = option(True, doc="also look in the system's library paths")


class OQSProvider(Provider):
    """Post-quantum algorithms from liboqs (entry point ``oqs``)."""

    name = "oqs"

    def __init__(
        self, provider_id: int, options: Mapping[str, Any], environment: ProviderEnvironment
    ) -> None:
        super().__init__(provider_id, options, environment)
        opts = parse_options(OQSOptions, options, provider="oqs", config_dir=environment.config_dir)
        self._install_path: str | None = opts.install_path
        self._system_search = opts.system_search
        self._oqs: ModuleType | None = None
        self._mechanisms: dict[str, Mechanism] = {}

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Find and load liboqs; PROVIDER_UNAVAILABLE (with how to install it) if absent."""
        oqs = library.import_oqs(self._install_path, system_search=self._system_search, logger=self.log)
        self._mechanisms = discover(oqs)
        self._oqs = oqs
        self._capabilities = None
        self.log.info(
            "liboqs %s from %s: %s",
            oqs.oqs_version(),
            library.loaded_path(oqs),
            ", ".join(sorted(self._mechanisms)),
        )

    def state(self) -> tuple[ProviderState, str]:
        """READY once started."""
        if self._oqs is None:
            return ProviderState.UNAVAILABLE, "not started"
        return ProviderState.READY, ""

    def describe(self) -> dict[str, Any]:
        """liboqs and liboqs-python versions, the library file and the algorithms."""
        if self._oqs is None:
            return {}
        return {
            "liboqs_version": self._oqs.oqs_version(),
            "liboqs_python_version": self._oqs.oqs_python_version(),
            "library": library.loaded_path(self._oqs),
            "algorithms": sorted(self._mechanisms),
            "slow_signing": sorted(n for n, m in self._mechanisms.items() if m.slow_signing),
        }

    @property
    def mechanisms(self) -> Mapping[str, Mechanism]:
        """The algorithms on offer, with the sizes liboqs reports."""
        return dict(self._mechanisms)

    def import_formats(self, algorithm: str) -> frozenset[KeyFormat]:
        """Key formats :meth:`import_key` accepts for ``algorithm`` (empty if not offered).

        Lets test runners decide whether e.g. a seed-based vector file applies here.
        """
        mech = self._mechanisms.get(algorithm)
        return keyformats.import_formats(mech) if mech is not None else frozenset()

    # --- capabilities ----------------------------------------------------------------
    def capabilities(self) -> Iterable[Capability]:
        """Key generation and import for every algorithm; sign/verify or encaps/decaps."""
        for name, mech in self._mechanisms.items():
            yield Capability(name, Operation.GENERATE_KEY)
            yield Capability(name, Operation.IMPORT_KEY)
            if mech.family is Family.ML_KEM:
                yield Capability(name, Operation.ENCAPSULATE)
                yield Capability(name, Operation.DECAPSULATE)
            else:
                yield Capability(name, Operation.SIGN)
                yield Capability(name, Operation.VERIFY)

    def run_inline(self, operation: Operation, size: int, algorithm: str | None = None) -> bool:
        """Cheap calls only: see the module docstring."""
        if algorithm is None:
            return False
        if operation in (Operation.ENCAPSULATE, Operation.DECAPSULATE):
            return algorithm.startswith("ML-KEM")
        if operation in (Operation.SIGN, Operation.VERIFY) and 0 < size <= 65536:
            return True  # an update: the message is only buffered
        if operation is Operation.VERIFY and size == 0:
            return algorithm.startswith(("ML-DSA", "Falcon"))
        return False

    # --- helpers ---------------------------------------------------------------------
    def _lib(self) -> ModuleType:
        if self._oqs is None:
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, "the oqs provider is not started")
        return self._oqs

    def _mechanism(self, algorithm: str) -> Mechanism:
        mech = self._mechanisms.get(algorithm)
        if mech is None:
            raise CryptoError(
                ErrorCode.UNSUPPORTED_ALGORITHM,
                f"the oqs provider does not offer {algorithm} (the loaded "
                "liboqs has it disabled, or it is not a post-quantum algorithm)",
            )
        return mech

    def _key(self, algorithm: str, key: ProviderKey) -> keys.OQSKey:
        if not isinstance(key, keys.OQSKey):
            raise invalid_argument(f"{algorithm} needs an oqs key, got {type(key).__name__}")
        if key.algorithm != algorithm:
            raise invalid_argument(f"a {key.algorithm} key cannot be used for {algorithm}")
        return key

    # --- keys ------------------------------------------------------------------------
    def generate_key(self, algorithm: str, permissions: KeyOperationPermission) -> ProviderKey:
        """A fresh key pair (ML-KEM from a fresh 64-byte seed, kept for SEED export)."""
        return keys.generate(self._lib(), self._mechanism(algorithm))

    def import_key(
        self, algorithm: str, material: bytes, fmt: KeyFormat, permissions: KeyOperationPermission
    ) -> ProviderKey:
        """A checked key from RAW, SEED (ML-KEM), SPKI_DER, PKCS8_DER or PEM material."""
        return keyformats.import_key(self._lib(), self._mechanism(algorithm), bytes(material), fmt)

    def export_key(self, key: ProviderKey, fmt: KeyFormat) -> bytes:
        """Private material: RAW (liboqs secret key), SEED (ML-KEM keys that have one),
        PKCS8_DER or PEM; RAW for a KEM shared secret."""
        if isinstance(key, keys.SharedSecret):
            if fmt is not KeyFormat.RAW:
                raise invalid_argument("a shared secret exports as RAW bytes only")
            return key.secret
        if not isinstance(key, keys.OQSKey):
            raise invalid_argument(f"not an oqs key: {type(key).__name__}")
        if not key.has_private:
            raise invalid_argument("this is a public key; use export_public_key")
        return keyformats.export_private(key, fmt)

    def export_public_key(self, key: ProviderKey, fmt: KeyFormat = KeyFormat.SPKI_DER) -> bytes:
        """SPKI_DER (ML-KEM, ML-DSA, SLH-DSA), PEM, or RAW (all, Falcon only RAW)."""
        if not isinstance(key, keys.OQSKey):
            raise invalid_argument(f"{getattr(key, 'algorithm', 'this key')} has no public part")
        return keyformats.export_public(key, fmt)

    def persist_key(self, key: ProviderKey, slot_name: str) -> StoredKey:
        """The key's material, for the key store to wrap at rest."""
        if isinstance(key, keys.OQSKey) and not key.has_private:
            raise invalid_argument("only key pairs can be persisted, not a public key alone")
        if not isinstance(key, (keys.OQSKey, keys.SharedSecret)):
            raise invalid_argument(f"not an oqs key: {type(key).__name__}")
        return StoredKey(blob=keys.to_blob(key), secret=True)

    def load_stored_key(
        self, stored: StoredKey, algorithm: str, permissions: KeyOperationPermission
    ) -> ProviderKey:
        """Rebuild a key from :meth:`persist_key`'s blob."""
        self._lib()
        return keys.from_blob(stored.blob, algorithm, self._mechanisms)

    # --- operations ------------------------------------------------------------------
    def signature_size(self, algorithm: str, key: ProviderKey) -> int:
        """Exact signature size (Falcon: the maximum; its signatures vary in length)."""
        return self._mechanism(algorithm).signature_size

    def create_signer(self, algorithm: str, key: ProviderKey, context: bytes) -> SignOperation:
        """Start signing one message (context string for ML-DSA and SLH-DSA)."""
        mech = self._mechanism(algorithm)
        if mech.family.is_kem:
            raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"{algorithm} is a KEM")
        return operations.OQSSigner(self._lib(), self._key(algorithm, key), context)

    def create_verifier(self, algorithm: str, key: ProviderKey, context: bytes) -> VerifyOperation:
        """Start verifying one message."""
        mech = self._mechanism(algorithm)
        if mech.family.is_kem:
            raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"{algorithm} is a KEM")
        return operations.OQSVerifier(self._lib(), self._key(algorithm, key), context)

    def encapsulate(
        self, algorithm: str, key: ProviderKey, secret_permissions: KeyOperationPermission
    ) -> tuple[bytes, ProviderKey]:
        """ML-KEM encapsulation: (ciphertext, GENERIC-SECRET shared secret)."""
        mech = self._mechanism(algorithm)
        if not mech.family.is_kem:
            raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"{algorithm} is not a KEM")
        return operations.encapsulate(self._lib(), self._key(algorithm, key))

    def decapsulate(
        self, algorithm: str, key: ProviderKey, ciphertext: bytes, secret_permissions: KeyOperationPermission
    ) -> ProviderKey:
        """ML-KEM decapsulation (implicit rejection for forged ciphertexts)."""
        mech = self._mechanism(algorithm)
        if not mech.family.is_kem:
            raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"{algorithm} is not a KEM")
        return operations.decapsulate(self._lib(), self._key(algorithm, key), ciphertext)
