"""Key import and export formats of the oqs provider.

=============  =========================================================================
RAW            public key: the FIPS encoding (ML-KEM ``ek``, ML-DSA/SLH-DSA ``pk``, Falcon
               ``h``). Private key: liboqs's secret key (ML-KEM ``dk``, ML-DSA expanded
               ``skEncode``, SLH-DSA ``SK.seed||SK.prf||PK.seed||PK.root``, Falcon
               reference encoding). The two are told apart by length.
SEED           ML-KEM only: ``d || z`` (64 bytes). ML-DSA seed import is **not supported**:
               liboqs has no public call that expands a 32-byte seed, so the mldsa seed
               Wycheproof file does not apply to this provider.
SPKI_DER       ML-KEM, ML-DSA, SLH-DSA (byte-identical to pyca/OpenSSL for ML-KEM/ML-DSA).
PKCS8_DER      ML-KEM and ML-DSA: the RFC 9881 / draft-ietf-lamps-kyber-certificates CHOICE
               -- written as ``seed`` when the key has its seed (identical to pyca), as
               ``expandedKey`` otherwise; ``seed`` alone is importable for ML-KEM, ``both``
               and ``expandedKey`` for both families. SLH-DSA: RFC 9909 (the raw secret key
               is the privateKey content). A version-2 publicKey, when present, must match.
PEM            "PUBLIC KEY" (SPKI) or "PRIVATE KEY" (PKCS#8) of the above.
=============  =========================================================================

Falcon has no standard OID yet, so only RAW applies to it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from cryptostack_core.sdk import CryptoError, ErrorCode, KeyFormat, der, invalid_argument

from . import keys
from .mechanisms import BY_OID, Family, Mechanism

_ALL = frozenset({KeyFormat.RAW, KeyFormat.SPKI_DER, KeyFormat.PKCS8_DER, KeyFormat.PEM})


def import_formats(mech: Mechanism) -> frozenset[KeyFormat]:
    """Formats :func:`import_key` accepts for ``mech``."""
    if mech.family is Family.FALCON:
        return frozenset({KeyFormat.RAW})
    if mech.family is Family.ML_KEM and mech.seed_size:
        return _ALL | {KeyFormat.SEED}
    return _ALL


def _no_oid(mech: Mechanism, fmt: KeyFormat) -> CryptoError:
    return invalid_argument(
        f"{mech.algorithm} has no standard OID yet, so there is no "
        f"{fmt.value} encoding for it; use KeyFormat.RAW"
    )


def import_key(oqs: ModuleType, mech: Mechanism, material: bytes, fmt: KeyFormat) -> keys.OQSKey:
    """Build a checked key from caller material; malformed input is INVALID_ARGUMENT."""
    if fmt is KeyFormat.RAW:
        if len(material) == mech.public_key_size:
            return keys.public_key(mech, material)
        if len(material) == mech.secret_key_size:
            return keys.key_pair(oqs, mech, material)
        raise invalid_argument(
            f"a RAW {mech.algorithm} key is {mech.public_key_size} bytes "
            f"(public) or {mech.secret_key_size} bytes (liboqs secret "
            f"key), got {len(material)}"
        )
    if fmt is KeyFormat.SEED:
        if mech.family is Family.ML_DSA:
            raise CryptoError(
                ErrorCode.UNSUPPORTED_ALGORITHM,
                f"{mech.algorithm} keys cannot be imported from a seed on the "
                "oqs provider: liboqs has no public seed expansion for ML-DSA "
                "(use the openssl provider, or import RAW/PKCS#8 expanded keys)",
            )
        return keys.from_seed(oqs, mech, material)
    if mech.oid is None and fmt is not KeyFormat.PEM:
        raise _no_oid(mech, fmt)
    try:
        if fmt is KeyFormat.SPKI_DER:
            return _from_spki(mech, material)
        if fmt is KeyFormat.PKCS8_DER:
            return _from_pkcs8(oqs, mech, material)
        if fmt is KeyFormat.PEM:
            label, body = der.pem_decode(material)
            if label == "PUBLIC KEY":
                return import_key(oqs, mech, body, KeyFormat.SPKI_DER)
            if label == "PRIVATE KEY":
                return import_key(oqs, mech, body, KeyFormat.PKCS8_DER)
            raise invalid_argument(
                f"PEM {label!r} is not a key this provider reads (PUBLIC KEY or PRIVATE KEY)"
            )
    except der.DerError as exc:
        raise invalid_argument(f"malformed {fmt.value} for {mech.algorithm}: {exc}") from None
    raise invalid_argument(f"unknown key format {fmt}")


def _check_oid(mech: Mechanism, oid: str, what: str) -> None:
    if oid != mech.oid:
        other = BY_OID.get(oid)
        named = other.algorithm if other is not None else f"OID {oid}"
        raise invalid_argument(f"this {what} holds a {named} key, not {mech.algorithm}")


def _from_spki(mech: Mechanism, data: bytes) -> keys.OQSKey:
    oid, public = der.decode_spki(data)
    _check_oid(mech, oid, "SubjectPublicKeyInfo")
    return keys.public_key(mech, public)


def _from_pkcs8(oqs: ModuleType, mech: Mechanism, data: bytes) -> keys.OQSKey:
    info = der.decode_pkcs8(data)
    _check_oid(mech, info.oid, "PKCS#8 structure")
    if mech.family is Family.SLH_DSA:
        return keys.key_pair(oqs, mech, info.private_key, info.public_key)
    seed_size = 64 if mech.family is Family.ML_KEM else 32
    tag, content, end = der.read(info.private_key)
    if end != len(info.private_key):
        raise der.DerError("trailing data after the private key CHOICE")
    if tag == der.CONTEXT_0_PRIMITIVE:  # seed
        if len(content) != seed_size:
            raise invalid_argument(f"an {mech.algorithm} seed is {seed_size} bytes")
        key = import_key(oqs, mech, content, KeyFormat.SEED)
    elif tag == der.OCTET_STRING:  # expandedKey
        key = keys.key_pair(oqs, mech, content)
    elif tag == der.SEQUENCE:  # both
        parts = der.read_all(content)
        if len(parts) != 2 or parts[0][0] != der.OCTET_STRING or parts[1][0] != der.OCTET_STRING:
            raise der.DerError("'both' must be SEQUENCE { seed OCTET STRING, expandedKey OCTET STRING }")
        seed, expanded = parts[0][1], parts[1][1]
        if len(seed) != seed_size:
            raise invalid_argument(f"an {mech.algorithm} seed is {seed_size} bytes")
        key = keys.key_pair(oqs, mech, expanded)
        _check_seed(oqs, key, seed)
        key = keys.OQSKey(mech, key.public, key.secret, seed)
    else:
        raise der.DerError(f"unknown {mech.family.value} private key form (tag {tag:#04x})")
    if info.public_key is not None and info.public_key != key.public:
        raise invalid_argument(f"the PKCS#8 publicKey does not belong to this {mech.algorithm} private key")
    return key


def _check_seed(oqs: ModuleType, key: keys.OQSKey, seed: bytes) -> None:
    mech = key.mechanism
    if mech.family is Family.ML_KEM:
        if keys.from_seed(oqs, mech, seed).secret != key.secret:
            raise invalid_argument(
                f"the {mech.algorithm} seed and expanded key of this PKCS#8 'both' structure do not match"
            )
        return
    # ML-DSA: liboqs cannot expand the seed, but pyca/OpenSSL can derive its public key.
    try:
        from cryptography.hazmat.primitives.asymmetric import mldsa
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        expand: dict[str, Callable[[bytes], Any]] = {
            "ML-DSA-44": mldsa.MLDSA44PrivateKey.from_seed_bytes,
            "ML-DSA-65": mldsa.MLDSA65PrivateKey.from_seed_bytes,
            "ML-DSA-87": mldsa.MLDSA87PrivateKey.from_seed_bytes,
        }
        public = expand[mech.algorithm](seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    except Exception as exc:  # any pyca failure means "cannot check"
        raise invalid_argument(
            f"cannot check the seed of this {mech.algorithm} PKCS#8 "
            f"'both' structure ({exc}); import its expandedKey alone"
        ) from None
    if public != key.public:
        raise invalid_argument(
            f"the {mech.algorithm} seed and expanded key of this PKCS#8 'both' structure do not match"
        )


def export_private(key: keys.OQSKey, fmt: KeyFormat) -> bytes:
    """Private material of a key pair in ``fmt``."""
    mech = key.mechanism
    secret = key.require_secret()
    if fmt is KeyFormat.RAW:
        return secret
    if fmt is KeyFormat.SEED:
        if mech.family not in (Family.ML_KEM, Family.ML_DSA):
            raise invalid_argument(f"{mech.algorithm} has no seed format")
        if key.seed is None:
            raise invalid_argument(
                f"this {mech.algorithm} key has no seed (it was generated "
                "by liboqs or imported in expanded form); export RAW or "
                "PKCS8_DER"
            )
        return key.seed
    if mech.oid is None:
        raise _no_oid(mech, fmt)
    if fmt is KeyFormat.PKCS8_DER:
        return der.encode_pkcs8(mech.oid, _private_choice(key, secret))
    if fmt is KeyFormat.PEM:
        return der.pem_encode("PRIVATE KEY", export_private(key, KeyFormat.PKCS8_DER))
    raise invalid_argument(f"{fmt.value} is not a private key format")


def _private_choice(key: keys.OQSKey, secret: bytes) -> bytes:
    if key.mechanism.family is Family.SLH_DSA:
        return secret
    if key.seed is not None:
        return der.tlv(der.CONTEXT_0_PRIMITIVE, key.seed)
    return der.tlv(der.OCTET_STRING, secret)


def export_public(key: keys.OQSKey, fmt: KeyFormat) -> bytes:
    """The public key in ``fmt`` (SPKI_DER by default in the daemon)."""
    mech = key.mechanism
    if fmt is KeyFormat.RAW:
        return key.public
    if mech.oid is None:
        raise _no_oid(mech, fmt)
    if fmt is KeyFormat.SPKI_DER:
        return der.encode_spki(mech.oid, key.public)
    if fmt is KeyFormat.PEM:
        return der.pem_encode("PUBLIC KEY", der.encode_spki(mech.oid, key.public))
    raise invalid_argument(f"{fmt.value} is not a public key format")
