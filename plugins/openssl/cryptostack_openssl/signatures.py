"""Signatures and MACs: ECDSA, RSA-PSS, Ed25519, ML-DSA and HMAC.

Everything streams without holding the message except Ed25519 (PureEdDSA needs the whole
message twice, so it is buffered; the daemon bounds the size):

* ECDSA and RSA-PSS hash incrementally and sign the digest (pyca ``Prehashed``);
* ML-DSA computes the FIPS 204 message representative mu incrementally
  (``MLDSAMuHasher``, which binds the public key and the context string) and signs or
  verifies mu, which is the same signature as signing the message itself;
* HMAC is incremental by nature.

Verification never raises for a wrong or malformed signature: it returns False.
"""

from __future__ import annotations

import hmac as _stdlib_hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa, utils
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding

from cryptostack_core.sdk import (
    REGISTRY,
    Buffer,
    CryptoError,
    ErrorCode,
    ProviderKey,
    SignOperation,
    VerifyOperation,
    invalid_argument,
)

from . import policy
from .hashing import hash_algorithm
from .keys import AsymmetricKey, SecretKey


@dataclass(frozen=True)
class SignatureSpec:
    """How one signature or MAC algorithm is computed."""

    scheme: str  # "ECDSA", "RSA-PSS", "Ed25519", "ML-DSA" or "HMAC"
    hash_name: str = ""  # digest of ECDSA, RSA-PSS and HMAC
    key_check: Callable[[object], bool] = lambda _: True
    """Whether a pyca public key (or, for HMAC, a key algorithm name) fits the algorithm."""


def _curve(curve: type[ec.EllipticCurve]) -> Callable[[object], bool]:
    return lambda k: isinstance(k, ec.EllipticCurvePublicKey) and isinstance(k.curve, curve)


def _instance(cls: type) -> Callable[[object], bool]:
    return lambda k: isinstance(k, cls)


SIGNATURES: dict[str, SignatureSpec] = {
    "ECDSA-P256": SignatureSpec("ECDSA", "SHA-256", _curve(ec.SECP256R1)),
    "ECDSA-P384": SignatureSpec("ECDSA", "SHA-384", _curve(ec.SECP384R1)),
    "RSA-PSS-SHA256": SignatureSpec("RSA-PSS", "SHA-256", _instance(rsa.RSAPublicKey)),
    "Ed25519": SignatureSpec("Ed25519", key_check=_instance(ed25519.Ed25519PublicKey)),
    "ML-DSA-44": SignatureSpec("ML-DSA", key_check=_instance(mldsa.MLDSA44PublicKey)),
    "ML-DSA-65": SignatureSpec("ML-DSA", key_check=_instance(mldsa.MLDSA65PublicKey)),
    "ML-DSA-87": SignatureSpec("ML-DSA", key_check=_instance(mldsa.MLDSA87PublicKey)),
    "HMAC-SHA-256": SignatureSpec("HMAC", "SHA-256"),
    "HMAC-SHA-384": SignatureSpec("HMAC", "SHA-384"),
    "HMAC-SHA-512": SignatureSpec("HMAC", "SHA-512"),
}
"""Signature and MAC algorithms of this provider."""

_PSS_SALT = 32
"""RSA-PSS salt length: the SHA-256 digest length (API.md: salt = digest length)."""


def _pss() -> asym_padding.PSS:
    return asym_padding.PSS(mgf=asym_padding.MGF1(hashes.SHA256()), salt_length=_PSS_SALT)


def _spec(algorithm: str) -> SignatureSpec:
    spec = SIGNATURES.get(algorithm)
    if spec is None:
        raise CryptoError(
            ErrorCode.UNSUPPORTED_ALGORITHM, f"the openssl provider does not sign with {algorithm}"
        )
    return spec


def _check_context(algorithm: str, spec: SignatureSpec, context: bytes) -> bytes:
    context = bytes(context or b"")
    if spec.scheme == "ML-DSA":
        REGISTRY.get(algorithm).check_context_string(context)
    elif context:
        raise invalid_argument(f"{algorithm} takes no context string (ML-DSA only)")
    return context


def _hmac_key(algorithm: str, key: ProviderKey) -> SecretKey:
    if not isinstance(key, SecretKey) or key.algorithm not in (algorithm, "GENERIC-SECRET"):
        raise invalid_argument(
            f"{algorithm} needs an {algorithm} or GENERIC-SECRET key, not {key.algorithm}"
        )
    return key


def _asymmetric_key(algorithm: str, spec: SignatureSpec, key: ProviderKey) -> AsymmetricKey:
    if not isinstance(key, AsymmetricKey) or not spec.key_check(key.public):
        raise invalid_argument(f"a {key.algorithm} key cannot be used for {algorithm}")
    return key


def create_signer(algorithm: str, key: ProviderKey, context: bytes) -> SignOperation:
    """Start signing (or MACing) one message."""
    spec = _spec(algorithm)
    context = _check_context(algorithm, spec, context)
    if spec.scheme == "HMAC":
        return _HmacSigner(_hmac_key(algorithm, key).secret, spec.hash_name)
    pair = _asymmetric_key(algorithm, spec, key)
    private = pair.private
    if private is None:
        raise invalid_argument(f"this {key.algorithm} key is a public key alone and cannot sign")
    if isinstance(private, ec.EllipticCurvePrivateKey):
        prehashed = ec.ECDSA(utils.Prehashed(hash_algorithm(spec.hash_name)))
        return _PrehashSigner(spec.hash_name, lambda digest: private.sign(digest, prehashed))
    if isinstance(private, rsa.RSAPrivateKey):
        prehash = utils.Prehashed(hashes.SHA256())
        return _PrehashSigner(spec.hash_name, lambda digest: private.sign(digest, _pss(), prehash))
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return _Ed25519Signer(private)
    if isinstance(
        private, (mldsa.MLDSA44PrivateKey, mldsa.MLDSA65PrivateKey, mldsa.MLDSA87PrivateKey)
    ):
        return _MlDsaSigner(private, context)
    raise invalid_argument(f"a {key.algorithm} key cannot be used for {algorithm}")


def create_verifier(
    algorithm: str,
    key: ProviderKey,
    context: bytes,
    min_mac_length: int = policy.DEFAULT_MIN_MAC_LENGTH,
) -> VerifyOperation:
    """Start verifying one message. HMAC tags may be truncated to ``min_mac_length`` bytes."""
    spec = _spec(algorithm)
    context = _check_context(algorithm, spec, context)
    if spec.scheme == "HMAC":
        return _HmacVerifier(_hmac_key(algorithm, key).secret, spec.hash_name, min_mac_length)
    public = _asymmetric_key(algorithm, spec, key).public
    if isinstance(public, ec.EllipticCurvePublicKey):
        prehashed = ec.ECDSA(utils.Prehashed(hash_algorithm(spec.hash_name)))

        def check_ecdsa(signature: bytes, digest: bytes) -> None:
            public.verify(signature, digest, prehashed)

        return _PrehashVerifier(spec.hash_name, check_ecdsa)
    if isinstance(public, rsa.RSAPublicKey):
        prehash = utils.Prehashed(hashes.SHA256())

        def check_pss(signature: bytes, digest: bytes) -> None:
            public.verify(signature, digest, _pss(), prehash)

        return _PrehashVerifier(spec.hash_name, check_pss)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return _Ed25519Verifier(public)
    if isinstance(public, (mldsa.MLDSA44PublicKey, mldsa.MLDSA65PublicKey, mldsa.MLDSA87PublicKey)):
        return _MlDsaVerifier(public, context)
    raise invalid_argument(f"a {key.algorithm} key cannot be used for {algorithm}")


# A malformed signature (bad DER, wrong length) surfaces from pyca as InvalidSignature or,
# for some encodings, ValueError; both mean "not a valid signature".
_REJECTED = (InvalidSignature, ValueError)


# --- hash-then-sign: ECDSA, RSA-PSS ----------------------------------------------------------


class _PrehashSigner(SignOperation):
    def __init__(self, hash_name: str, sign: Callable[[bytes], bytes]) -> None:
        self._hash = hashes.Hash(hash_algorithm(hash_name))
        self._sign = sign

    def update(self, data: Buffer) -> None:
        """Hash more of the message."""
        self._hash.update(data)

    def finalize(self) -> bytes:
        """Sign the digest (DER for ECDSA)."""
        return self._sign(self._hash.finalize())


class _PrehashVerifier(VerifyOperation):
    def __init__(self, hash_name: str, check: Callable[[bytes, bytes], None]) -> None:
        self._hash = hashes.Hash(hash_algorithm(hash_name))
        self._check = check

    def update(self, data: Buffer) -> None:
        """Hash more of the message."""
        self._hash.update(data)

    def finalize(self, signature: bytes) -> bool:
        """Whether ``signature`` signs the digest."""
        digest = self._hash.finalize()
        try:
            self._check(bytes(signature), digest)
        except _REJECTED:
            return False
        return True


# --- Ed25519: buffered -------------------------------------------------------------------------


class _Ed25519Signer(SignOperation):
    def __init__(self, private: ed25519.Ed25519PrivateKey) -> None:
        self._private = private
        self._message = bytearray()

    def update(self, data: Buffer) -> None:
        """Buffer more of the message."""
        self._message += data

    def finalize(self) -> bytes:
        """The 64-byte signature."""
        return self._private.sign(bytes(self._message))


class _Ed25519Verifier(VerifyOperation):
    def __init__(self, public: ed25519.Ed25519PublicKey) -> None:
        self._public = public
        self._message = bytearray()

    def update(self, data: Buffer) -> None:
        """Buffer more of the message."""
        self._message += data

    def finalize(self, signature: bytes) -> bool:
        """Whether ``signature`` is valid (OpenSSL rejects non-canonical S and points)."""
        try:
            self._public.verify(bytes(signature), bytes(self._message))
        except _REJECTED:
            return False
        return True


# --- ML-DSA: streaming through mu --------------------------------------------------------------

MlDsaPrivate = mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey
MlDsaPublic = mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey


class _MlDsaSigner(SignOperation):
    def __init__(self, private: MlDsaPrivate, context: bytes) -> None:
        self._private = private
        self._mu = mldsa.MLDSAMuHasher(private.public_key(), context)

    def update(self, data: Buffer) -> None:
        """Absorb more of the message into mu."""
        self._mu.update(data)

    def finalize(self) -> bytes:
        """Hedged (randomised) ML-DSA signature of the message."""
        return self._private.sign_mu(self._mu.finalize())


class _MlDsaVerifier(VerifyOperation):
    def __init__(self, public: MlDsaPublic, context: bytes) -> None:
        self._public = public
        self._mu = mldsa.MLDSAMuHasher(public, context)

    def update(self, data: Buffer) -> None:
        """Absorb more of the message into mu."""
        self._mu.update(data)

    def finalize(self, signature: bytes) -> bool:
        """Whether ``signature`` is a valid ML-DSA signature of the message and context."""
        try:
            self._public.verify_mu(bytes(signature), self._mu.finalize())
        except _REJECTED:
            return False
        return True


# --- HMAC --------------------------------------------------------------------------------------


class _HmacSigner(SignOperation):
    def __init__(self, secret: bytes, hash_name: str) -> None:
        self._mac = hmac.HMAC(secret, hash_algorithm(hash_name))

    def update(self, data: Buffer) -> None:
        """MAC more of the message."""
        self._mac.update(data)

    def finalize(self) -> bytes:
        """The full-length tag."""
        return self._mac.finalize()


class _HmacVerifier(VerifyOperation):
    def __init__(self, secret: bytes, hash_name: str, min_length: int) -> None:
        self._mac = hmac.HMAC(secret, hash_algorithm(hash_name))
        self._min_length = min_length

    def update(self, data: Buffer) -> None:
        """MAC more of the message."""
        self._mac.update(data)

    def finalize(self, signature: bytes) -> bool:
        """Whether ``signature`` is the tag, or a prefix of it at least ``min_mac_length``
        bytes long; compared in constant time (the length is not secret)."""
        full = self._mac.finalize()
        tag = bytes(signature)
        if len(tag) != len(full) and not self._min_length <= len(tag) < len(full):
            return False
        return _stdlib_hmac.compare_digest(full[: len(tag)], tag)
