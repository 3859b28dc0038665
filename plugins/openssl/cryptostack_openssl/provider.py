"""The OpenSSL software provider: pyca/cryptography (>= 50, OpenSSL 3.5+) in the daemon.

Algorithms (canonical names): SHA-224/256/384/512, SHA3-224/256/384/512; AES-128/192/256 in
CBC (PKCS#7), CTR and GCM; ChaCha20-Poly1305; HMAC-SHA-256/384/512; ECDSA-P256 (SHA-256),
ECDSA-P384 (SHA-384), Ed25519, RSA-PSS-SHA256, ML-DSA-44/65/87; ML-KEM-768/1024; X25519 and
ECDH-P256; HKDF-SHA-256/384/512; RANDOM; and the hybrids (:mod:`cryptostack_openssl.hybrid`,
docs/hybrid.md): the KEMs X-Wing and X25519MLKEM768 and the 18 composite ML-DSA signatures
(ML-DSA-44/65/87 with ECDSA, EdDSA or RSA, e.g. ML-DSA-65-ECDSA-P256-SHA512). Keys: AES-*,
ChaCha20-Poly1305, HMAC-*, GENERIC-SECRET, ECDSA-P256/P384, ECDH-P256, Ed25519, X25519,
RSA-2048/3072/4096, ML-DSA-*, ML-KEM-768/1024 and the hybrid algorithms -- all extractable
(software keys), persisted as key material that the key store encrypts at rest.

Option: ``min_mac_length`` (int, default 16, at least 10): the shortest truncated HMAC tag
that verification accepts.

Policy decisions (the values live in :mod:`cryptostack_openssl.policy`; the tests assert
each one):

* **AES-GCM IV**: 8 to 128 bytes; other lengths are INVALID_ARGUMENT. 12 bytes is the
  recommended length; IVs below 64 bits make IV collisions under one key likely, and
  pyca/cryptography refuses them as well. (Wycheproof lists 1-6 and 257-byte IVs as valid;
  this provider rejects them by policy.)
* **AES-GCM tag length**: 4, 8, 12, 13, 14, 15 or 16 bytes (NIST SP 800-38D 5.2.1.2).
  Decryption with a shorter tag checks that prefix of the tag.
* **ChaCha20-Poly1305**: 12-byte nonce and 16-byte tag only (RFC 8439).
* **AEAD decryption** returns ``b""`` from every ``update`` and the whole plaintext from
  ``finalize`` once the tag verifies; a bad tag is AUTHENTICATION_FAILED, input shorter than
  the tag INVALID_ARGUMENT.
* **AES-CBC**: PKCS#7 padding; decryption streams all but the last block, and bad padding
  or a partial block is INVALID_ARGUMENT from ``finalize`` (CBC is unauthenticated: use an
  AEAD where tampering matters).
* **HMAC verification** computes the full tag and compares in constant time. A tag of full
  length must match; a shorter tag is accepted iff it is at least ``min_mac_length`` bytes
  and equals the prefix of the MAC; anything else is False. HMAC keys are 16 to 1024 bytes
  (shorter keys cap the MAC's strength); GENERIC-SECRET keys 1 to 1024 bytes. (The daemon
  at present verifies MACs itself from the signer's tag and the context's tag length, so
  this rule governs direct users of :meth:`OpenSSLProvider.create_verifier`.)
* **RSA**: an imported key must have exactly the modulus size its algorithm names
  (RSA-2048/3072/4096); anything else is INVALID_ARGUMENT -- no rounding to a neighbour.
  Generated keys use e = 65537. RSA-PSS-SHA256 uses MGF1-SHA-256 and a 32-byte salt for
  signing, and verification demands exactly that salt length.
* **X25519**: a low-order peer key (all-zero shared secret) is INVALID_ARGUMENT;
  non-canonical and twist points are processed as RFC 7748 defines.
* **ECDH-P256**: the peer key must be a valid point on P-256 (SPKI DER or SEC1 point,
  compressed accepted); explicit-parameter curves and malformed DER are INVALID_ARGUMENT.
* **Key import** checks the material is a key of the requested algorithm (curve, modulus
  size, parameter set). RAW: secret bytes; raw public keys of Ed25519, X25519 and ML-*; SEC1
  points (public) and big-endian scalars (private) for the EC algorithms. A 32-byte RAW
  Ed25519/X25519 key is read as a *private* key when the requested permissions include an
  operation only a private key serves (SIGN for Ed25519; AGREE or DERIVE for X25519), as a
  public key otherwise. SEED: ML-KEM d||z (64 bytes), ML-DSA xi (32 bytes). ML-KEM
  encapsulation keys failing the FIPS 203 modulus check are INVALID_ARGUMENT.
* **ML-DSA** signing is hedged (randomised); context strings are at most 255 bytes and other
  algorithms refuse a non-empty context with INVALID_ARGUMENT.
* **Streaming**: ECDSA and RSA-PSS hash incrementally; ML-DSA absorbs the message into mu
  incrementally; composites hash it with their pre-hash PH; only Ed25519 buffers the message.
* **Hybrids**: low-order X25519 halves, X-Wing versus X25519MLKEM768 decapsulation and the
  key formats are decided in the docstring of :mod:`cryptostack_openssl.hybrid`.
* **run_inline** (the event loop must not stall for more than tens of microseconds):
  hash and cipher calls with at most 8 KiB of input (SHA3-512, the slowest, does 8 KiB in
  ~30 us; 1 MiB would take 0.6-4 ms), sign/verify *updates* of 1 byte to 8 KiB (hashing,
  absorbing into mu, or buffering), HKDF, random (at most 8 KiB), ML-KEM encapsulation and
  decapsulation (~25-40 us measured) -- but not the hybrid KEMs, whose added X25519 work
  makes a call 50-70 us, as long as ECDH-P256. Sign/verify calls without input
  (finalisation: RSA, ECDSA-P384 and ML-DSA take 0.3-1.5 ms) go to a worker thread unless
  the caller names an HMAC algorithm; so do agreement (ECDH-P256 ~70 us) and asymmetric key
  generation and import (RSA-2048 generation ~40 ms, ML-DSA seed expansion ~150-300 us).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cryptography
from cryptography.hazmat.backends.openssl.backend import backend

from cryptostack_core.sdk import (
    Capability,
    CipherDirection,
    CipherOperation,
    CryptoError,
    ErrorCode,
    HashOperation,
    KeyFormat,
    KeyOperationPermission,
    Operation,
    Provider,
    ProviderEnvironment,
    ProviderKey,
    SignOperation,
    StoredKey,
    VerifyOperation,
)
from cryptostack_core.sdk.hybrid import COMPOSITE_SIGNATURES, HYBRID_KEMS
from cryptostack_core.sdk.options import option, parse_options

from . import agreement, ciphers, hashing, hybrid, kdf, kem, keys, policy, randomness, signatures

_PQ_PREFIXES = ("ML-DSA-", "ML-KEM-")

_INLINE_SIZED = frozenset({Operation.HASH, Operation.ENCRYPT, Operation.DECRYPT})
_INLINE_ALWAYS = frozenset({Operation.DERIVE, Operation.ENCAPSULATE, Operation.DECAPSULATE})


@dataclass(frozen=True, kw_only=True)
class OpenSSLOptions:
    """The provider's options (checked by the SDK's :func:`parse_options`)."""

    min_mac_length: int = option(
        policy.DEFAULT_MIN_MAC_LENGTH,
        minimum=policy.MIN_MAC_LENGTH_FLOOR,
        doc="shortest truncated HMAC tag verification accepts",
    )


class OpenSSLProvider(Provider):
    """Software provider on pyca/cryptography; see the module docstring for its policy."""

    name = "openssl"

    def __init__(
        self, provider_id: int, options: Mapping[str, Any], environment: ProviderEnvironment
    ) -> None:
        super().__init__(provider_id, options, environment)
        opts = parse_options(
            OpenSSLOptions, options, provider="openssl", config_dir=environment.config_dir
        )
        self.min_mac_length: int = opts.min_mac_length
        self._post_quantum = bool(backend.mldsa_supported() and backend.mlkem_supported())

    # --- lifecycle and description ------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Library versions and options, for ``status``."""
        return {
            "cryptography": cryptography.__version__,
            "openssl": backend.openssl_version_text(),
            "post_quantum": self._post_quantum,
            "min_mac_length": self.min_mac_length,
        }

    def capabilities(self) -> Iterable[Capability]:
        """Every algorithm of the module docstring with its operations (ML-DSA/ML-KEM only
        when the OpenSSL underneath supports them)."""
        pairs: list[tuple[str, Operation]] = []
        pairs += [(name, Operation.HASH) for name in hashing.HASHES]
        for name in ciphers.CIPHERS:
            pairs += [(name, Operation.ENCRYPT), (name, Operation.DECRYPT)]
        for name in signatures.SIGNATURES:
            pairs += [(name, Operation.SIGN), (name, Operation.VERIFY)]
        for name in kem.KEMS:
            pairs += [(name, Operation.ENCAPSULATE), (name, Operation.DECAPSULATE)]
        pairs += [(name, Operation.AGREE) for name in agreement.AGREEMENTS]
        pairs += [(name, Operation.DERIVE) for name in kdf.KDFS]
        pairs.append(("RANDOM", Operation.RANDOM))
        for name in keys.KEY_ALGORITHMS | hybrid.KEY_ALGORITHMS:
            pairs += [(name, Operation.GENERATE_KEY), (name, Operation.IMPORT_KEY)]
        for name in sorted(hybrid.KEY_ALGORITHMS):
            if name in HYBRID_KEMS:
                pairs += [(name, Operation.ENCAPSULATE), (name, Operation.DECAPSULATE)]
            else:
                pairs += [(name, Operation.SIGN), (name, Operation.VERIFY)]
        return [
            Capability(algorithm, operation)
            for algorithm, operation in pairs
            if self._offers(algorithm)
        ]

    def _offers(self, algorithm: str) -> bool:
        if algorithm in hybrid.KEY_ALGORITHMS:
            return self._post_quantum and hybrid.supported(algorithm)
        return self._post_quantum or not algorithm.startswith(_PQ_PREFIXES)

    def run_inline(self, operation: Operation, size: int, algorithm: str | None = None) -> bool:
        """Whether a call is cheap enough for the event loop (see the module docstring).

        ``algorithm`` is optional (the SDK passes only operation and size); with it, HMAC
        finalisation and symmetric key generation/import can run inline too.
        """
        if operation in _INLINE_SIZED or operation is Operation.RANDOM:
            return size <= policy.INLINE_BYTES
        if operation in _INLINE_ALWAYS:
            # The hybrid KEMs add X25519 work to ML-KEM: 50-70 us a call, as long as ECDH-P256.
            return algorithm not in HYBRID_KEMS
        if operation in (Operation.SIGN, Operation.VERIFY):
            # Input bytes mean an update: hashing, absorbing into mu or buffering, all cheap.
            # Without input it may be a finalisation, which for RSA or ML-DSA takes
            # milliseconds -- unless the algorithm says it is an HMAC.
            if 0 < size <= policy.INLINE_BYTES:
                return True
            return size == 0 and algorithm is not None and algorithm.startswith("HMAC-")
        if operation in (Operation.GENERATE_KEY, Operation.IMPORT_KEY):
            return algorithm is not None and algorithm in keys.SECRET_LENGTHS
        return False

    # --- keys -----------------------------------------------------------------------------------
    def generate_key(self, algorithm: str, permissions: KeyOperationPermission) -> ProviderKey:
        """A fresh key (secret bytes from the OS, key pairs from OpenSSL)."""
        self._require(algorithm, Operation.GENERATE_KEY)
        if algorithm in hybrid.KEY_ALGORITHMS:
            return hybrid.generate_key(algorithm)
        return keys.generate_key(algorithm)

    def import_key(
        self, algorithm: str, material: bytes, fmt: KeyFormat, permissions: KeyOperationPermission
    ) -> ProviderKey:
        """A key from caller material; malformed or mismatched material -> INVALID_ARGUMENT."""
        self._require(algorithm, Operation.IMPORT_KEY)
        if algorithm in hybrid.KEY_ALGORITHMS:
            return hybrid.import_key(algorithm, material, fmt)
        return keys.import_key(algorithm, material, fmt, permissions)

    def export_key(self, key: ProviderKey, fmt: KeyFormat) -> bytes:
        """Secret (RAW) or private (PKCS8_DER, PEM, RAW, SEED) material."""
        if hybrid.is_hybrid_key(key):
            return hybrid.export_key(key, fmt)
        return keys.export_key(key, fmt)

    def export_public_key(self, key: ProviderKey, fmt: KeyFormat = KeyFormat.SPKI_DER) -> bytes:
        """SPKI DER (default), PEM, or RAW public key."""
        if hybrid.is_hybrid_key(key):
            return hybrid.export_public_key(key, fmt)
        return keys.export_public_key(key, fmt)

    def persist_key(self, key: ProviderKey, slot_name: str) -> StoredKey:
        """The key's material in a self-describing form, for the key store to encrypt."""
        if hybrid.is_hybrid_key(key):
            return StoredKey(blob=keys.pack(key.algorithm, *hybrid.stored_form(key)), secret=True)
        return StoredKey(blob=keys.serialize(key), secret=True)

    def load_stored_key(
        self, stored: StoredKey, algorithm: str, permissions: KeyOperationPermission
    ) -> ProviderKey:
        """The key :meth:`persist_key` stored; it must be of ``algorithm``."""
        if algorithm in hybrid.KEY_ALGORITHMS:
            fmt, material = keys.unpack(stored.blob, algorithm)
            return hybrid.import_key(algorithm, material, fmt)
        return keys.deserialize(stored.blob, algorithm)

    # --- operations --------------------------------------------------------------------------
    def create_hash(self, algorithm: str) -> HashOperation:
        """One digest."""
        return hashing.Digest(algorithm)

    def create_cipher(
        self,
        algorithm: str,
        key: ProviderKey,
        direction: CipherDirection,
        iv: bytes,
        tag_length: int,
    ) -> CipherOperation:
        """One message (IV and tag-length policy in the module docstring)."""
        return ciphers.create_cipher(algorithm, key, direction, iv, tag_length)

    def create_signer(self, algorithm: str, key: ProviderKey, context: bytes) -> SignOperation:
        """Sign or MAC one message."""
        self._require(algorithm, Operation.SIGN)
        if algorithm in COMPOSITE_SIGNATURES:
            return hybrid.create_signer(algorithm, key, context)
        return signatures.create_signer(algorithm, key, context)

    def create_verifier(self, algorithm: str, key: ProviderKey, context: bytes) -> VerifyOperation:
        """Verify one message; HMAC accepts tags truncated to ``min_mac_length``."""
        self._require(algorithm, Operation.VERIFY)
        if algorithm in COMPOSITE_SIGNATURES:
            return hybrid.create_verifier(algorithm, key, context)
        return signatures.create_verifier(algorithm, key, context, self.min_mac_length)

    def encapsulate(
        self, algorithm: str, key: ProviderKey, secret_permissions: KeyOperationPermission
    ) -> tuple[bytes, ProviderKey]:
        """ML-KEM, X-Wing or X25519MLKEM768 encapsulation: (ciphertext, GENERIC-SECRET key)."""
        self._require(algorithm, Operation.ENCAPSULATE)
        if algorithm in HYBRID_KEMS:
            return hybrid.encapsulate(algorithm, key)
        return kem.encapsulate(algorithm, key)

    def decapsulate(
        self,
        algorithm: str,
        key: ProviderKey,
        ciphertext: bytes,
        secret_permissions: KeyOperationPermission,
    ) -> ProviderKey:
        """ML-KEM, X-Wing or X25519MLKEM768 decapsulation into a GENERIC-SECRET key."""
        self._require(algorithm, Operation.DECAPSULATE)
        if algorithm in HYBRID_KEMS:
            return hybrid.decapsulate(algorithm, key, ciphertext)
        return kem.decapsulate(algorithm, key, ciphertext)

    def agree(
        self,
        algorithm: str,
        key: ProviderKey,
        peer_public: bytes,
        secret_permissions: KeyOperationPermission,
    ) -> ProviderKey:
        """X25519 / ECDH-P256 into a GENERIC-SECRET key."""
        return agreement.agree(algorithm, key, peer_public)

    def derive(
        self,
        algorithm: str,
        key: ProviderKey,
        *,
        length: int,
        salt: bytes,
        info: bytes,
        output_algorithm: str,
        permissions: KeyOperationPermission,
    ) -> ProviderKey:
        """HKDF into a new symmetric key of ``output_algorithm``."""
        return kdf.derive(
            algorithm, key, length=length, salt=salt, info=info, output_algorithm=output_algorithm
        )

    def random_bytes(self, length: int) -> bytes:
        """``length`` bytes from the OS CSPRNG."""
        return randomness.random_bytes(length)

    def _require(self, algorithm: str, operation: Operation) -> None:
        if not self.supports(algorithm, operation):
            raise CryptoError(
                ErrorCode.UNSUPPORTED_ALGORITHM,
                f"the openssl provider does not {operation.value} {algorithm}",
            )
