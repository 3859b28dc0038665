"""Signature verification of certificates and CRLs (pyca) under an algorithm allowlist.

pyca verifies every signature; this module decides which algorithms are acceptable and
maps library errors to a verdict. The check is done on the raw signed bytes, not with
``Certificate.verify_directly_issued_by``, because that also demands an exact (not RFC 5280
7.1) issuer/subject name match, which name chaining handles separately.

Accepted: ECDSA with SHA-256/384/512 on P-256/P-384/P-521; RSA PKCS#1 v1.5 with
SHA-256/384/512 and RSASSA-PSS with SHA-256/384/512 (MGF1 with the same hash, salt =
digest length), RSA keys of at least 2048 bits; Ed25519; Ed448; ML-DSA-44/65/87. DSA is
*unsupported* (a legacy algorithm; pyca cannot even parse keys that inherit their
parameters): such a signature is neither good nor bad, and is reported as such.
Anything else (SHA-1, MD5, weak keys, other PSS parameters) is *disallowed*.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, mldsa, padding, rsa
from cryptography.x509.oid import SignatureAlgorithmOID

from .parsing import describe, library_detail, signature_algorithm_der

__all__ = ["SignatureCheck", "check_signature"]

_PSS_SALT = {1: 32, 2: 48, 3: 64}  # last byte of the SHA-2 hash OID -> salt length


def _pss_algorithm_identifier(hash_index: int) -> bytes:
    hash_alg = bytes.fromhex("300d06096086480165030402") + bytes([hash_index]) + b"\x05\x00"
    mgf = bytes.fromhex("301a06092a864886f70d010108") + hash_alg
    params = (
        b"\xa0"
        + bytes([len(hash_alg)])
        + hash_alg
        + b"\xa1"
        + bytes([len(mgf)])
        + mgf
        + b"\xa2\x03\x02\x01"
        + bytes([_PSS_SALT[hash_index]])
    )
    seq = b"\x30" + bytes([len(params)]) + params
    body = bytes.fromhex("06092a864886f70d01010a") + seq
    return b"\x30" + bytes([len(body)]) + body


# Exact DER AlgorithmIdentifier encodings accepted (RSA with NULL parameters, PSS with the
# salt equal to the digest length), as in pyca's own WebPKI set plus EdDSA and ML-DSA.
_ALLOWED: dict[bytes, str] = {
    bytes.fromhex("300a06082a8648ce3d040302"): "ecdsa-with-SHA256",
    bytes.fromhex("300a06082a8648ce3d040303"): "ecdsa-with-SHA384",
    bytes.fromhex("300a06082a8648ce3d040304"): "ecdsa-with-SHA512",
    bytes.fromhex("300d06092a864886f70d01010b0500"): "sha256WithRSAEncryption",
    bytes.fromhex("300d06092a864886f70d01010c0500"): "sha384WithRSAEncryption",
    bytes.fromhex("300d06092a864886f70d01010d0500"): "sha512WithRSAEncryption",
    _pss_algorithm_identifier(1): "RSASSA-PSS-SHA256",
    _pss_algorithm_identifier(2): "RSASSA-PSS-SHA384",
    _pss_algorithm_identifier(3): "RSASSA-PSS-SHA512",
    bytes.fromhex("300506032b6570"): "Ed25519",
    bytes.fromhex("300506032b6571"): "Ed448",
    bytes.fromhex("300b0609608648016503040311"): "ML-DSA-44",
    bytes.fromhex("300b0609608648016503040312"): "ML-DSA-65",
    bytes.fromhex("300b0609608648016503040313"): "ML-DSA-87",
}
_DSA_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.DSA_WITH_SHA1,
        SignatureAlgorithmOID.DSA_WITH_SHA224,
        SignatureAlgorithmOID.DSA_WITH_SHA256,
        SignatureAlgorithmOID.DSA_WITH_SHA384,
        SignatureAlgorithmOID.DSA_WITH_SHA512,
    }
)
_ALLOWED_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_MIN_RSA_BITS = 2048


class SignatureCheck(enum.Enum):
    """Outcome of one signature check."""

    GOOD = "good"
    BAD = "bad"  # does not verify under the issuer's key
    DISALLOWED = "disallowed"  # algorithm, parameters or issuer key outside the allowlist
    UNSUPPORTED = "unsupported"  # DSA: cannot be judged either way


def _label(signed: x509.Certificate | x509.CertificateRevocationList) -> str:
    return describe(signed) if isinstance(signed, x509.Certificate) else "CRL"


def check_signature(
    signed: x509.Certificate | x509.CertificateRevocationList, issuer: x509.Certificate
) -> tuple[SignatureCheck, str]:
    """Whether ``issuer``'s public key made the signature on ``signed``; (verdict, why)."""
    what = _label(signed)
    if signed.signature_algorithm_oid in _DSA_SIGNATURES:
        return SignatureCheck.UNSUPPORTED, (
            f"{what} is signed with DSA ({signed.signature_algorithm_oid.dotted_string}), "
            "a legacy algorithm that is not supported"
        )
    if signature_algorithm_der(signed) not in _ALLOWED:
        return SignatureCheck.DISALLOWED, (
            f"{what} is signed with a disallowed signature algorithm "
            f"{signed.signature_algorithm_oid.dotted_string} (or disallowed parameters)"
        )
    try:
        key = issuer.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        return SignatureCheck.DISALLOWED, (
            f"public key of issuer {describe(issuer)} is unsupported: {library_detail(exc)}"
        )
    if isinstance(key, dsa.DSAPublicKey):
        return SignatureCheck.UNSUPPORTED, (
            f"issuer {describe(issuer)} of {what} has a DSA key, a legacy algorithm that is not supported"
        )
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
        return SignatureCheck.DISALLOWED, (
            f"RSA key of issuer {describe(issuer)} is too weak ({key.key_size} bits)"
        )
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in _ALLOWED_CURVES:
        return SignatureCheck.DISALLOWED, (
            f"EC key of issuer {describe(issuer)} uses disallowed curve {key.curve.name}"
        )
    data = signed.tbs_certificate_bytes if isinstance(signed, x509.Certificate) else signed.tbs_certlist_bytes
    try:
        _verify(key, signed, data, _ALLOWED[signature_algorithm_der(signed)])
    except InvalidSignature:
        return SignatureCheck.BAD, (
            f"signature of {what} does not verify under the public key of its issuer {describe(issuer)}"
        )
    except (UnsupportedAlgorithm, ValueError, TypeError) as exc:
        # The issuer's key cannot have made this signature (e.g. an RSA signature under a
        # CA with an EC key): it does not verify, like a forged one.
        return SignatureCheck.BAD, (
            f"signature of {what} does not verify under the public key of its issuer "
            f"{describe(issuer)}: {library_detail(exc)}"
        )
    return SignatureCheck.GOOD, ""


_PURE_KEY_TYPES: dict[str, type] = {
    "Ed25519": ed25519.Ed25519PublicKey,
    "Ed448": ed448.Ed448PublicKey,
    "ML-DSA-44": mldsa.MLDSA44PublicKey,
    "ML-DSA-65": mldsa.MLDSA65PublicKey,
    "ML-DSA-87": mldsa.MLDSA87PublicKey,
}


def _verify(
    key: object, signed: x509.Certificate | x509.CertificateRevocationList, data: bytes, algorithm: str
) -> None:
    signature = signed.signature
    pure = _PURE_KEY_TYPES.get(algorithm)
    if pure is not None:
        if not isinstance(key, pure):
            raise ValueError(f"{algorithm} signature algorithm does not match issuer key type")
        verify: Callable[[bytes, bytes], None] = key.verify  # type: ignore[attr-defined]
        verify(signature, data)
        return
    digest = signed.signature_hash_algorithm
    params = signed.signature_algorithm_parameters
    if not isinstance(digest, hashes.HashAlgorithm):
        raise ValueError("signature algorithm does not match issuer key type")
    if isinstance(key, rsa.RSAPublicKey):
        if not isinstance(params, padding.PSS | padding.PKCS1v15):
            raise ValueError("signature algorithm does not match issuer key type (RSA)")
        key.verify(signature, data, params, digest)
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(params, ec.ECDSA):
            raise ValueError("signature algorithm does not match issuer key type (EC)")
        key.verify(signature, data, params)
        return
    raise ValueError(f"unsupported issuer key type {type(key).__name__}")
