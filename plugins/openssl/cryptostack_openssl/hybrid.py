"""Hybrid post-quantum algorithms with both halves in this provider: the KEMs X-Wing and
X25519MLKEM768 and the composite ML-DSA signatures.

The constructions (splitting, length checks, the X-Wing seed expansion and combiner, the
composite message representative and encodings, SPKI/PKCS#8 with the specifications' OIDs)
come from :mod:`cryptostack_core.hybrid`; this module holds the keys as pyca objects and
runs the component operations.

Key formats:

* **X-Wing**: SEED and RAW private = the 32-byte decapsulation key; RAW public = the
  1216-byte encapsulation key; SPKI_DER / PKCS8_DER / PEM with id-XWing
  (1.3.6.1.4.1.62253.25722), the raw keys as the BIT STRING / OCTET STRING content.
* **X25519MLKEM768**: SEED and RAW private = ML-KEM-768 seed d||z (64) || X25519 scalar
  (32), this project's encoding (the TLS draft only has ephemeral shares); RAW public = the
  1216-byte client share. No OID exists, so no SPKI/PKCS#8.
* **Composite ML-DSA**: RAW public = ``mldsaPK || tradPK``, RAW private = ``mldsaSeed ||
  tradSK`` (draft section 5; a RAW import is read as a public key when it parses as one,
  as a private key otherwise); SPKI_DER / PKCS8_DER / PEM with the algorithm's OID. There is
  no SEED form.

Policy beyond the specifications:

* An X25519 half that is a low-order point (all-zero shared secret) is refused with
  INVALID_ARGUMENT when a public key is imported and when encapsulating, for both KEMs: the
  hybrid would silently lose its classical half.
* X25519MLKEM768 decapsulation refuses a low-order X25519 ciphertext half with
  INVALID_ARGUMENT, as the TLS draft requires (RFC 8446 section 7.4.2 all-zero check).
  X-Wing decapsulation never fails on a ciphertext of the right length: it computes exactly
  what the draft defines, an all-zero X25519 share included (X-Wing specifies no check).
* Composite verification returns False, never an error, for a signature of impossible
  length or a malformed half; both halves must verify.
"""

from __future__ import annotations

import hmac
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.backends.openssl.backend import backend
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, mlkem, rsa, x25519
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding

from cryptostack_core.sdk import (
    Buffer,
    CryptoError,
    ErrorCode,
    KeyFormat,
    ProviderKey,
    SignOperation,
    VerifyOperation,
    invalid_argument,
)
from cryptostack_core.sdk import hybrid as spec_hybrid
from cryptostack_core.sdk.hybrid import (
    COMPOSITE_SIGNATURES,
    HYBRID_KEMS,
    CompositeSignatureSpec,
    HybridKemSpec,
    TraditionalPrivateKey,
    TraditionalPublicKey,
    TraditionalSpec,
)

from .keys import SecretKey
from .randomness import random_bytes

KEY_ALGORITHMS = frozenset(HYBRID_KEMS) | frozenset(COMPOSITE_SIGNATURES)
"""Hybrid key algorithms (each is also the operation algorithm of its keys)."""

_MLDSA: dict[str, tuple[Any, Any]] = {
    "ML-DSA-44": (mldsa.MLDSA44PrivateKey, mldsa.MLDSA44PublicKey),
    "ML-DSA-65": (mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey),
    "ML-DSA-87": (mldsa.MLDSA87PrivateKey, mldsa.MLDSA87PublicKey),
}
_ZERO_SECRET = bytes(32)


def supported(algorithm: str) -> bool:
    """Whether the OpenSSL underneath has every component of ``algorithm`` (ML-KEM / ML-DSA
    are checked by the provider; here the traditional curves of the composites)."""
    composite = COMPOSITE_SIGNATURES.get(algorithm)
    if composite is None:
        return algorithm in HYBRID_KEMS and bool(backend.x25519_supported())
    trad = composite.traditional
    if trad.scheme == "EdDSA":
        return bool(
            backend.ed25519_supported() if trad.curve == "Ed25519" else backend.ed448_supported()
        )
    curve = trad.ec_curve
    return curve is None or bool(backend.elliptic_curve_supported(curve))


# ============================================================================================
# keys
# ============================================================================================


class HybridKemKey(ProviderKey):
    """An X-Wing or X25519MLKEM768 key: both halves as pyca objects, plus the decapsulation
    key as the specification encodes it (``private_key``, None for a public key alone)."""

    def __init__(
        self,
        spec: HybridKemSpec,
        mlkem_public: mlkem.MLKEM768PublicKey,
        x25519_public: x25519.X25519PublicKey,
        private_key: bytes | None = None,
        mlkem_private: mlkem.MLKEM768PrivateKey | None = None,
        x25519_private: x25519.X25519PrivateKey | None = None,
    ) -> None:
        self.spec = spec
        self.algorithm = spec.name
        self.mlkem_public = mlkem_public
        self.x25519_public = x25519_public
        self.private_key = private_key
        self.mlkem_private = mlkem_private
        self.x25519_private = x25519_private
        self.has_private = private_key is not None
        self.extractable = True
        self.size = spec.private_key_size
        self.public_bytes = spec.join_public_key(
            mlkem_public.public_bytes_raw(), x25519_public.public_bytes_raw()
        )

    def __repr__(self) -> str:
        return f"HybridKemKey({self.algorithm}, {'pair' if self.has_private else 'public'})"


class CompositeKey(ProviderKey):
    """A composite ML-DSA key: ML-DSA and traditional halves as pyca objects; the private
    halves (and the ML-DSA seed) are None for a public key alone."""

    def __init__(
        self,
        spec: CompositeSignatureSpec,
        mldsa_public: Any,
        traditional_public: TraditionalPublicKey,
        mldsa_seed: bytes | None = None,
        mldsa_private: Any = None,
        traditional_private: TraditionalPrivateKey | None = None,
    ) -> None:
        self.spec = spec
        self.algorithm = spec.name
        self.mldsa_public = mldsa_public
        self.traditional_public = traditional_public
        self.mldsa_seed = mldsa_seed
        self.mldsa_private = mldsa_private
        self.traditional_private = traditional_private
        self.has_private = mldsa_seed is not None
        self.extractable = True
        self.size = 0
        self.public_bytes = spec.join_public_key(
            mldsa_public.public_bytes_raw(), spec.traditional.encode_public(traditional_public)
        )

    def private_bytes(self) -> bytes:
        """``mldsaSeed || tradSK`` (the composite private key encoding)."""
        if self.mldsa_seed is None or self.traditional_private is None:
            raise invalid_argument(
                f"this {self.algorithm} key is a public key alone; use export_public_key"
            )
        return self.spec.join_private_key(
            self.mldsa_seed, self.spec.traditional.encode_private(self.traditional_private)
        )

    def __repr__(self) -> str:
        return f"CompositeKey({self.algorithm}, {'pair' if self.has_private else 'public'})"


HybridKey = HybridKemKey | CompositeKey


def is_hybrid_key(key: ProviderKey) -> bool:
    """Whether ``key`` is one of this module's keys."""
    return isinstance(key, (HybridKemKey, CompositeKey))


def generate_key(algorithm: str) -> HybridKey:
    """A fresh key: an X-Wing seed from the OS, ML-KEM and X25519 halves generated afresh
    for X25519MLKEM768, a fresh ML-DSA seed and traditional key for a composite (the draft
    forbids reusing component keys)."""
    if algorithm in HYBRID_KEMS:
        spec = HYBRID_KEMS[algorithm]
        return _kem_private(spec, random_bytes(spec.private_key_size))
    spec_c = _composite(algorithm)
    trad = spec_c.traditional.generate()
    return _composite_private(spec_c, random_bytes(spec_hybrid.MLDSA_SEED_SIZE), trad)


def import_key(algorithm: str, material: bytes, fmt: KeyFormat) -> HybridKey:
    """A key from caller material in ``fmt`` (see the module docstring for the formats)."""
    material = bytes(material)
    if algorithm in HYBRID_KEMS:
        return _import_kem(HYBRID_KEMS[algorithm], material, fmt)
    return _import_composite(_composite(algorithm), material, fmt)


def export_key(key: ProviderKey, fmt: KeyFormat) -> bytes:
    """Private material of ``key`` in ``fmt``."""
    if isinstance(key, HybridKemKey):
        if key.private_key is None:
            raise invalid_argument(
                f"this {key.algorithm} key is a public key alone; use export_public_key"
            )
        if fmt in (KeyFormat.SEED, KeyFormat.RAW):
            return key.private_key
        return _wrap_private(key.spec.name, key.spec.oid, key.private_key, fmt)
    composite = _composite_key(key)
    if fmt is KeyFormat.RAW:
        return composite.private_bytes()
    if fmt is KeyFormat.SEED:
        raise invalid_argument(
            f"{key.algorithm} keys have no SEED form (RAW is mldsaSeed || tradSK)"
        )
    return _wrap_private(key.algorithm, composite.spec.oid, composite.private_bytes(), fmt)


def export_public_key(key: ProviderKey, fmt: KeyFormat) -> bytes:
    """The public key: RAW (the specification's encoding), SPKI_DER or PEM."""
    oid: str | None
    if isinstance(key, HybridKemKey):
        oid, public = key.spec.oid, key.public_bytes
    else:
        composite = _composite_key(key)
        oid, public = composite.spec.oid, composite.public_bytes
    if fmt is KeyFormat.RAW:
        return public
    if oid is None:
        raise invalid_argument(
            f"{key.algorithm} has no SubjectPublicKeyInfo encoding (no OID is defined); use RAW"
        )
    if fmt is KeyFormat.SPKI_DER:
        return spec_hybrid.encode_spki(oid, public)
    if fmt is KeyFormat.PEM:
        return spec_hybrid.pem_encode("PUBLIC KEY", spec_hybrid.encode_spki(oid, public))
    raise invalid_argument(f"public keys are exported as SPKI_DER, PEM or RAW, not {fmt.value}")


def stored_form(key: ProviderKey) -> tuple[KeyFormat, bytes]:
    """(format, material) persisted for ``key``: SEED or RAW public for the KEMs, PKCS8_DER or
    SPKI_DER for composites (self-describing, so reloading needs no guess)."""
    if isinstance(key, HybridKemKey):
        if key.private_key is not None:
            return KeyFormat.SEED, key.private_key
        return KeyFormat.RAW, key.public_bytes
    composite = _composite_key(key)
    if composite.has_private:
        return KeyFormat.PKCS8_DER, export_key(composite, KeyFormat.PKCS8_DER)
    return KeyFormat.SPKI_DER, export_public_key(composite, KeyFormat.SPKI_DER)


# --- KEM keys ---------------------------------------------------------------------------------


def _import_kem(spec: HybridKemSpec, material: bytes, fmt: KeyFormat) -> HybridKemKey:
    if fmt is KeyFormat.SEED:
        return _kem_private(spec, material)
    if fmt is KeyFormat.RAW:
        if len(material) == spec.private_key_size:
            return _kem_private(spec, material)
        if len(material) == spec.public_key_size:
            return _kem_public(spec, material)
        raise invalid_argument(
            f"a RAW {spec.name} key is {spec.private_key_size} bytes "
            f"(private) or {spec.public_key_size} bytes (public), got "
            f"{len(material)}"
        )
    if spec.oid is None:
        raise invalid_argument(
            f"{spec.name} keys are imported as SEED or RAW (no OID is defined for {fmt.value})"
        )
    private, public = _unwrap(spec.name, spec.oid, material, fmt)
    if private is None:
        assert public is not None
        return _kem_public(spec, public)
    key = _kem_private(spec, private)
    if public is not None and not hmac.compare_digest(public, key.public_bytes):
        raise invalid_argument(f"the PKCS#8 publicKey does not match the {spec.name} private key")
    return key


def _kem_private(spec: HybridKemSpec, private_key: bytes) -> HybridKemKey:
    mlkem_seed, x25519_scalar = spec.expand_private_key(private_key)
    mlkem_private = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed)
    x25519_private = x25519.X25519PrivateKey.from_private_bytes(x25519_scalar)
    return HybridKemKey(
        spec,
        mlkem_private.public_key(),
        x25519_private.public_key(),
        bytes(private_key),
        mlkem_private,
        x25519_private,
    )


def _kem_public(spec: HybridKemSpec, public_key: bytes) -> HybridKemKey:
    mlkem_part, x25519_part = spec.split_public_key(public_key)
    try:
        mlkem_public = mlkem.MLKEM768PublicKey.from_public_bytes(mlkem_part)
    except ValueError as exc:
        raise invalid_argument(
            f"the ML-KEM-768 half of the {spec.name} public key is invalid: {exc}"
        ) from None
    x25519_public = x25519.X25519PublicKey.from_public_bytes(x25519_part)
    if _low_order(x25519_public):
        raise invalid_argument(
            f"the X25519 half of the {spec.name} public key is a low-order point"
        )
    return HybridKemKey(spec, mlkem_public, x25519_public)


def _low_order(public: x25519.X25519PublicKey) -> bool:
    # X25519 with any scalar gives the all-zero output exactly for the low-order points
    # (the clamped scalar is a multiple of the cofactor); OpenSSL refuses that output.
    try:
        x25519.X25519PrivateKey.generate().exchange(public)
    except ValueError:
        return True
    return False


# --- composite keys -------------------------------------------------------------------------


def _import_composite(
    spec: CompositeSignatureSpec, material: bytes, fmt: KeyFormat
) -> CompositeKey:
    if fmt is KeyFormat.RAW:
        try:
            return _composite_public(spec, material)
        except CryptoError:
            pass
        try:
            return _composite_private_bytes(spec, material)
        except CryptoError as exc:
            raise invalid_argument(
                f"RAW material is neither an {spec.name} public key nor "
                f"a private key ({exc.message})"
            ) from None
    if fmt is KeyFormat.SEED:
        raise invalid_argument(f"{spec.name} keys have no SEED form; use RAW, PKCS8_DER or PEM")
    private, public = _unwrap(spec.name, spec.oid, material, fmt)
    if private is None:
        assert public is not None
        return _composite_public(spec, public)
    key = _composite_private_bytes(spec, private)
    if public is not None and not hmac.compare_digest(public, key.public_bytes):
        raise invalid_argument(f"the PKCS#8 publicKey does not match the {spec.name} private key")
    return key


def _composite_public(spec: CompositeSignatureSpec, public_key: bytes) -> CompositeKey:
    mldsa_part, trad_part = spec.split_public_key(public_key)
    try:
        mldsa_public = _MLDSA[spec.mldsa][1].from_public_bytes(mldsa_part)
    except ValueError as exc:
        raise invalid_argument(
            f"the {spec.mldsa} half of the {spec.name} public key is invalid: {exc}"
        ) from None
    return CompositeKey(spec, mldsa_public, spec.traditional.decode_public(trad_part))


def _composite_private_bytes(spec: CompositeSignatureSpec, private_key: bytes) -> CompositeKey:
    seed, trad_part = spec.split_private_key(private_key)
    return _composite_private(spec, seed, spec.traditional.decode_private(trad_part))


def _composite_private(
    spec: CompositeSignatureSpec, seed: bytes, trad: TraditionalPrivateKey
) -> CompositeKey:
    mldsa_private = _MLDSA[spec.mldsa][0].from_seed_bytes(seed)
    return CompositeKey(
        spec, mldsa_private.public_key(), trad.public_key(), bytes(seed), mldsa_private, trad
    )


# --- shared ---------------------------------------------------------------------------------


def _unwrap(
    name: str, oid: str, material: bytes, fmt: KeyFormat
) -> tuple[bytes | None, bytes | None]:
    """(private, public) from SPKI_DER / PKCS8_DER / PEM, checking the OID."""
    if fmt is KeyFormat.PEM:
        label, material = spec_hybrid.pem_decode(material)
        if label == "PUBLIC KEY":
            fmt = KeyFormat.SPKI_DER
        elif label == "PRIVATE KEY":
            fmt = KeyFormat.PKCS8_DER
        else:
            raise invalid_argument(f"a PEM {name} key is a PUBLIC KEY or PRIVATE KEY, not {label}")
    if fmt is KeyFormat.SPKI_DER:
        found, public = spec_hybrid.decode_spki(material)
        _check_oid(name, oid, found)
        return None, public
    if fmt is KeyFormat.PKCS8_DER:
        found, private, maybe_public = spec_hybrid.decode_pkcs8(material)
        _check_oid(name, oid, found)
        return private, maybe_public
    raise invalid_argument(f"unknown key format {fmt!r}")


def _check_oid(name: str, expected: str, found: str) -> None:
    if found != expected:
        raise invalid_argument(
            f"the key's algorithm identifier is {found}, not {name} ({expected})"
        )


def _wrap_private(name: str, oid: str | None, private: bytes, fmt: KeyFormat) -> bytes:
    if oid is None:
        raise invalid_argument(
            f"{name} has no PKCS#8 encoding (no OID is defined); use SEED or RAW"
        )
    if fmt is KeyFormat.PKCS8_DER:
        return spec_hybrid.encode_pkcs8(oid, private)
    if fmt is KeyFormat.PEM:
        return spec_hybrid.pem_encode("PRIVATE KEY", spec_hybrid.encode_pkcs8(oid, private))
    raise invalid_argument(
        f"{name} private keys are exported as RAW, PKCS8_DER or PEM, not {fmt.value}"
    )


def _composite(algorithm: str) -> CompositeSignatureSpec:
    spec = COMPOSITE_SIGNATURES.get(algorithm)
    if spec is None:
        raise CryptoError(
            ErrorCode.UNSUPPORTED_ALGORITHM,
            f"the openssl provider has no hybrid algorithm {algorithm}",
        )
    return spec


def _composite_key(key: ProviderKey) -> CompositeKey:
    if not isinstance(key, CompositeKey):
        raise invalid_argument(f"{key.algorithm} is not a composite ML-DSA key")
    return key


# ============================================================================================
# KEM operations
# ============================================================================================


def _kem_key(algorithm: str, key: ProviderKey) -> HybridKemKey:
    if not isinstance(key, HybridKemKey) or key.algorithm != algorithm:
        raise invalid_argument(f"{algorithm} needs an {algorithm} key, not {key.algorithm}")
    return key


def encapsulate(algorithm: str, key: ProviderKey) -> tuple[bytes, SecretKey]:
    """(ciphertext, shared secret) to the encapsulation key in ``key``."""
    pair = _kem_key(algorithm, key)
    spec = pair.spec
    mlkem_secret, mlkem_ciphertext = pair.mlkem_public.encapsulate()
    ephemeral = x25519.X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    try:
        x25519_secret = ephemeral.exchange(pair.x25519_public)
    except ValueError:
        raise invalid_argument(
            f"the X25519 half of the {algorithm} public key is a low-order point"
        ) from None
    x25519_public = pair.x25519_public.public_bytes_raw()
    secret = spec.combine(mlkem_secret, x25519_secret, ephemeral_public, x25519_public)
    return spec.join_ciphertext(mlkem_ciphertext, ephemeral_public), SecretKey(
        "GENERIC-SECRET", secret
    )


def decapsulate(algorithm: str, key: ProviderKey, ciphertext: bytes) -> SecretKey:
    """Shared secret of ``ciphertext`` under the decapsulation key in ``key``; a ciphertext
    of the wrong length is INVALID_ARGUMENT."""
    pair = _kem_key(algorithm, key)
    if pair.mlkem_private is None or pair.x25519_private is None:
        raise invalid_argument(
            f"this {algorithm} key is an encapsulation key alone and cannot decapsulate"
        )
    spec = pair.spec
    mlkem_ciphertext, x25519_ciphertext = spec.split_ciphertext(ciphertext)
    mlkem_secret = pair.mlkem_private.decapsulate(mlkem_ciphertext)
    try:
        x25519_secret = pair.x25519_private.exchange(
            x25519.X25519PublicKey.from_public_bytes(x25519_ciphertext)
        )
    except ValueError:
        if not spec.hashed:
            raise invalid_argument(
                f"the X25519 half of the {algorithm} ciphertext is a low-order point"
            ) from None
        x25519_secret = _ZERO_SECRET  # X-Wing defines no check: X25519 gave all zeros
    secret = spec.combine(
        mlkem_secret, x25519_secret, x25519_ciphertext, pair.x25519_public.public_bytes_raw()
    )
    return SecretKey("GENERIC-SECRET", secret)


# ============================================================================================
# composite signatures
# ============================================================================================

_REJECTED = (InvalidSignature, ValueError, UnsupportedAlgorithm)


def _signing_key(algorithm: str, key: ProviderKey) -> CompositeKey:
    if not isinstance(key, CompositeKey) or key.algorithm != algorithm:
        raise invalid_argument(f"a {key.algorithm} key cannot be used for {algorithm}")
    return key


def create_signer(algorithm: str, key: ProviderKey, context: bytes) -> SignOperation:
    """Start signing one message with a composite key pair."""
    pair = _signing_key(algorithm, key)
    if not pair.has_private:
        raise invalid_argument(f"this {algorithm} key is a public key alone and cannot sign")
    return _CompositeSigner(pair, _context(context))


def create_verifier(algorithm: str, key: ProviderKey, context: bytes) -> VerifyOperation:
    """Start verifying one message against a composite public key."""
    return _CompositeVerifier(_signing_key(algorithm, key), _context(context))


def _context(context: bytes) -> bytes:
    context = bytes(context or b"")
    if len(context) > 255:
        raise invalid_argument(
            f"composite context strings are at most 255 bytes, got {len(context)}"
        )
    return context


def _trad_padding(trad: TraditionalSpec) -> asym_padding.AsymmetricPadding:
    hash_algorithm = trad.hash_algorithm
    assert hash_algorithm is not None
    if trad.scheme == "RSA-PSS":
        return asym_padding.PSS(mgf=asym_padding.MGF1(hash_algorithm), salt_length=trad.pss_salt)
    return asym_padding.PKCS1v15()


def _trad_sign(trad: TraditionalSpec, private: TraditionalPrivateKey, message: bytes) -> bytes:
    if isinstance(private, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return private.sign(message)
    hash_algorithm = trad.hash_algorithm
    assert hash_algorithm is not None
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return private.sign(message, ec.ECDSA(hash_algorithm))
    return private.sign(message, _trad_padding(trad), hash_algorithm)


def _trad_verify(
    trad: TraditionalSpec, public: TraditionalPublicKey, signature: bytes, message: bytes
) -> bool:
    try:
        if isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            public.verify(signature, message)
        else:
            hash_algorithm = trad.hash_algorithm
            assert hash_algorithm is not None
            if isinstance(public, ec.EllipticCurvePublicKey):
                public.verify(signature, message, ec.ECDSA(hash_algorithm))
            else:
                assert isinstance(public, rsa.RSAPublicKey)
                public.verify(signature, message, _trad_padding(trad), hash_algorithm)
    except _REJECTED:
        return False
    return True


class _CompositeSigner(SignOperation):
    """Streams the message into PH; both halves sign M' at finalisation."""

    def __init__(self, key: CompositeKey, context: bytes) -> None:
        self._key = key
        self._context = context
        self._hash = key.spec.prehash()

    def update(self, data: Buffer) -> None:
        """Hash more of the message (PH)."""
        self._hash.update(data)

    def finalize(self) -> bytes:
        """``mldsaSig || tradSig`` over M' (ML-DSA hedged, with the label as its context)."""
        key, spec = self._key, self._key.spec
        assert key.mldsa_private is not None and key.traditional_private is not None
        message = spec.message_representative(self._context, self._hash.finalize())
        mldsa_signature = key.mldsa_private.sign(message, spec.label)
        trad_signature = _trad_sign(spec.traditional, key.traditional_private, message)
        return spec.join_signature(mldsa_signature, trad_signature)


class _CompositeVerifier(VerifyOperation):
    """Streams the message into PH; both halves are checked against M'."""

    def __init__(self, key: CompositeKey, context: bytes) -> None:
        self._key = key
        self._context = context
        self._hash = key.spec.prehash()

    def update(self, data: Buffer) -> None:
        """Hash more of the message (PH)."""
        self._hash.update(data)

    def finalize(self, signature: bytes) -> bool:
        """True iff both component signatures verify over M'."""
        key, spec = self._key, self._key.spec
        message = spec.message_representative(self._context, self._hash.finalize())
        halves = spec.split_signature(signature)
        if halves is None:
            return False
        mldsa_signature, trad_signature = halves
        try:
            key.mldsa_public.verify(mldsa_signature, message, spec.label)
        except _REJECTED:
            return False
        return _trad_verify(spec.traditional, key.traditional_public, trad_signature, message)
