"""Key material in API formats (RAW, SPKI, PKCS#8, PEM) and in PKCS#11 attributes.

Parsing and checking of caller material happens here, in the provider, with
pyca/cryptography, before anything reaches the token: a malformed key, the wrong curve or
modulus size is ``INVALID_ARGUMENT`` naming algorithm and format (the same rules as the
software provider). Private keys go to the token as PKCS#8 DER; public keys as the
``CKA_EC_PARAMS``/``CKA_EC_POINT`` or ``CKA_MODULUS``/``CKA_PUBLIC_EXPONENT`` attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pkcs11.constants import Attribute
from pkcs11.mechanisms import KeyType

from cryptostack_core.sdk import CryptoError, ErrorCode, KeyFormat, der, invalid_argument
from cryptostack_core.sdk import KeyOperationPermission as P

from . import policy
from .mechanisms import EC_CURVES, ED25519_PARAMS, RSA_SIZES

PublicKey = Union[ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, rsa.RSAPublicKey]
PrivateKey = Union[ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey]

SECRET_LENGTHS: dict[str, tuple[int, int]] = {
    "AES-128": (16, 16),
    "AES-192": (24, 24),
    "AES-256": (32, 32),
    "HMAC-SHA-256": (policy.HMAC_KEY_MIN, policy.SECRET_KEY_MAX),
    "HMAC-SHA-384": (policy.HMAC_KEY_MIN, policy.SECRET_KEY_MAX),
    "HMAC-SHA-512": (policy.HMAC_KEY_MIN, policy.SECRET_KEY_MAX),
    "GENERIC-SECRET": (1, policy.SECRET_KEY_MAX),
}
"""Symmetric key algorithms and the lengths imported (inclusive, bytes)."""

GENERATED_SECRET_LENGTHS = {
    "HMAC-SHA-256": 32,
    "HMAC-SHA-384": 48,
    "HMAC-SHA-512": 64,
    "GENERIC-SECRET": policy.GENERIC_SECRET_GENERATED,
}
HMAC_BLOCK = {"HMAC-SHA-256": 64, "HMAC-SHA-384": 128, "HMAC-SHA-512": 128}

_CURVES: dict[str, type[ec.EllipticCurve]] = {"ECDSA-P256": ec.SECP256R1, "ECDSA-P384": ec.SECP384R1}
_PRIVATE_USE = P.SIGN | P.AGREE | P.DERIVE | P.DECRYPT | P.UNWRAP
"""Permissions only a private key serves: a 32-byte RAW Ed25519 import is a private key when
the caller asks for one of them, a public key otherwise (as in the software provider)."""


def secret_key_type(algorithm: str) -> int:
    """CKK_* of a symmetric key algorithm."""
    return int(KeyType.AES if algorithm.startswith("AES-") else KeyType.GENERIC_SECRET)


def asymmetric_key_type(algorithm: str) -> int:
    """CKK_* of an asymmetric key algorithm."""
    if algorithm in _CURVES:
        return int(KeyType.EC)
    if algorithm == "Ed25519":
        return int(KeyType.EC_EDWARDS)
    if algorithm in RSA_SIZES:
        return int(KeyType.RSA)
    raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"the pkcs11 provider has no {algorithm} keys")


def is_symmetric(algorithm: str) -> bool:
    """Whether ``algorithm`` names a secret key."""
    return algorithm in SECRET_LENGTHS


@dataclass(frozen=True)
class ParsedKey:
    """Caller material, checked: a secret, a private key (PKCS#8 + public), or a public key."""

    secret: bytes = b""
    pkcs8: bytes = b""
    public: Any = None
    private: Any = None

    @property
    def is_private(self) -> bool:
        """True for a key pair."""
        return bool(self.pkcs8)


def parse_secret(algorithm: str, material: bytes, fmt: KeyFormat) -> bytes:
    """Raw bytes of a symmetric key, length-checked."""
    if fmt is not KeyFormat.RAW:
        raise invalid_argument(f"{algorithm} keys are imported as RAW bytes, not {fmt.value}")
    low, high = SECRET_LENGTHS[algorithm]
    if not low <= len(material) <= high:
        expected = f"{low}" if low == high else f"{low} to {high}"
        raise invalid_argument(f"a {algorithm} key is {expected} bytes long, got {len(material)}")
    return bytes(material)


def parse_asymmetric(algorithm: str, material: bytes, fmt: KeyFormat, permissions: P) -> ParsedKey:
    """A key pair or public key of ``algorithm`` from caller material."""
    try:
        obj = _decode(algorithm, bytes(material), fmt, permissions)
    except CryptoError:
        raise
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise invalid_argument(f"{fmt.value} material is not a valid {algorithm} key: {exc}") from None
    if isinstance(obj, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey)):
        _check_kind(algorithm, obj.public_key(), fmt)
        pkcs8 = obj.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        return ParsedKey(pkcs8=pkcs8, public=obj.public_key(), private=obj)
    _check_kind(algorithm, obj, fmt)
    return ParsedKey(public=obj)


def _decode(algorithm: str, material: bytes, fmt: KeyFormat, permissions: P) -> Any:
    if fmt is KeyFormat.SPKI_DER:
        return ser.load_der_public_key(material)
    if fmt is KeyFormat.PKCS8_DER:
        return ser.load_der_private_key(material, password=None)
    if fmt is KeyFormat.PEM:
        if b"PRIVATE KEY-----" in material:
            return ser.load_pem_private_key(material, password=None)
        return ser.load_pem_public_key(material)
    if fmt is KeyFormat.RAW:
        if algorithm in _CURVES:
            curve = _CURVES[algorithm]()
            size = (curve.key_size + 7) // 8
            if len(material) == size:  # a scalar; SEC1 points are longer
                return ec.derive_private_key(int.from_bytes(material, "big"), curve)
            if len(material) not in (2 * size + 1, size + 1):
                raise ValueError(f"a raw public key is a {2 * size + 1}-byte SEC1 point")
            return ec.EllipticCurvePublicKey.from_encoded_point(curve, material)
        if algorithm == "Ed25519":
            if permissions & _PRIVATE_USE:
                return ed25519.Ed25519PrivateKey.from_private_bytes(material)
            return ed25519.Ed25519PublicKey.from_public_bytes(material)
        raise invalid_argument(f"{algorithm} keys have no RAW form; use SPKI_DER, PKCS8_DER or PEM")
    raise invalid_argument(f"{algorithm} keys cannot be imported as {fmt.value}")


def _check_kind(algorithm: str, public: Any, fmt: KeyFormat) -> None:
    if algorithm in _CURVES:
        ok = isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, _CURVES[algorithm])
    elif algorithm == "Ed25519":
        ok = isinstance(public, ed25519.Ed25519PublicKey)
    elif algorithm in RSA_SIZES:
        ok = isinstance(public, rsa.RSAPublicKey) and public.key_size == RSA_SIZES[algorithm]
    else:
        ok = False
    if not ok:
        raise invalid_argument(f"{fmt.value} material holds {_describe(public)}, not a {algorithm} key")


def _describe(public: Any) -> str:
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"a {public.curve.name} EC key"
    if isinstance(public, rsa.RSAPublicKey):
        return f"an RSA key with a {public.key_size}-bit modulus"
    return f"a {type(public).__name__.replace('PublicKey', '')} key"


# --- PKCS#11 public-key attributes ------------------------------------------------------


def _unwrap_point(value: bytes, expected: tuple[int, ...]) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING per PKCS#11; some tokens store the bare point."""
    if len(value) in expected:
        return value
    try:
        inner = der.unwrap_octet_string(value)
    except der.DerError:
        inner = b""
    if len(inner) in expected:
        return inner
    raise CryptoError(ErrorCode.PROVIDER_ERROR, "the token returned a malformed CKA_EC_POINT")


def public_attributes(algorithm: str, public: Any) -> dict[int, Any]:
    """Attributes describing ``public`` for ``C_CreateObject`` (class and key type included)."""
    attrs: dict[int, Any] = {
        int(Attribute.CLASS): 2,  # CKO_PUBLIC_KEY
        int(Attribute.KEY_TYPE): asymmetric_key_type(algorithm),
    }
    if isinstance(public, ec.EllipticCurvePublicKey):
        point = public.public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
        attrs[int(Attribute.EC_PARAMS)] = EC_CURVES[algorithm][0]
        attrs[int(Attribute.EC_POINT)] = der.tlv(der.OCTET_STRING, point)
    elif isinstance(public, ed25519.Ed25519PublicKey):
        attrs[int(Attribute.EC_PARAMS)] = ED25519_PARAMS
        attrs[int(Attribute.EC_POINT)] = der.tlv(der.OCTET_STRING, public.public_bytes_raw())
    elif isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        attrs[int(Attribute.MODULUS)] = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        attrs[int(Attribute.PUBLIC_EXPONENT)] = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    else:
        raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"no token form for {public!r}")
    return attrs


def public_from_attributes(algorithm: str, attrs: dict[int, bytes]) -> PublicKey:
    """The pyca public key the token describes in ``attrs``."""
    if algorithm in _CURVES:
        curve = _CURVES[algorithm]()
        size = (curve.key_size + 7) // 8
        point = _unwrap_point(attrs[int(Attribute.EC_POINT)], (2 * size + 1,))
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    if algorithm == "Ed25519":
        raw = _unwrap_point(attrs[int(Attribute.EC_POINT)], (32,))
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    if algorithm in RSA_SIZES:
        n = int.from_bytes(attrs[int(Attribute.MODULUS)], "big")
        e = int.from_bytes(attrs[int(Attribute.PUBLIC_EXPONENT)], "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"the pkcs11 provider has no {algorithm} keys")


def _fixed(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


def _big(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def private_components(algorithm: str, private: Any) -> dict[int, Any]:
    """Attributes of a private key object for ``C_CreateObject`` (tokens that cannot unwrap
    this key type)."""
    if isinstance(private, ec.EllipticCurvePrivateKey):
        size = (private.curve.key_size + 7) // 8
        return {
            int(Attribute.EC_PARAMS): EC_CURVES[algorithm][0],
            int(Attribute.VALUE): _fixed(private.private_numbers().private_value, size),
        }
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return {int(Attribute.EC_PARAMS): ED25519_PARAMS, int(Attribute.VALUE): private.private_bytes_raw()}
    if isinstance(private, rsa.RSAPrivateKey):
        n = private.private_numbers()
        return {
            int(Attribute.MODULUS): _big(n.public_numbers.n),
            int(Attribute.PUBLIC_EXPONENT): _big(n.public_numbers.e),
            int(Attribute.PRIVATE_EXPONENT): _big(n.d),
            int(Attribute.PRIME_1): _big(n.p),
            int(Attribute.PRIME_2): _big(n.q),
            int(Attribute.EXPONENT_1): _big(n.dmp1),
            int(Attribute.EXPONENT_2): _big(n.dmq1),
            int(Attribute.COEFFICIENT): _big(n.iqmp),
        }
    raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"no token form for {algorithm} keys")


def private_from_value(algorithm: str, value: bytes) -> Any:
    """The pyca private key whose ``CKA_VALUE`` is ``value`` (EC scalar, EdDSA seed)."""
    if algorithm in _CURVES:
        return ec.derive_private_key(int.from_bytes(value, "big"), _CURVES[algorithm]())
    if algorithm == "Ed25519":
        return ed25519.Ed25519PrivateKey.from_private_bytes(value)
    raise CryptoError(
        ErrorCode.KEY_OPERATION_NOT_PERMITTED, f"{algorithm} private keys cannot be read from the token"
    )


# --- export -------------------------------------------------------------------------------


def export_public(public: Any, fmt: KeyFormat) -> bytes:
    """Public key in SPKI DER, PEM or RAW (SEC1 uncompressed point for EC)."""
    if fmt is KeyFormat.SPKI_DER:
        return bytes(public.public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo))
    if fmt is KeyFormat.PEM:
        return bytes(public.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))
    if fmt is KeyFormat.RAW:
        if isinstance(public, ec.EllipticCurvePublicKey):
            return public.public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
        if isinstance(public, rsa.RSAPublicKey):
            raise invalid_argument("RSA public keys have no RAW form; use SPKI_DER")
        return bytes(public.public_bytes_raw())
    raise invalid_argument(f"public keys are exported as SPKI_DER, PEM or RAW, not {fmt.value}")


def load_exported_pkcs8(algorithm: str, pkcs8: bytes) -> Any:
    """The pyca private key of a PKCS#8 the token exported."""
    try:
        # token key wrapping may pad the PKCS#8 (SoftHSM2 pads to 8 bytes for RFC 5649)
        return ser.load_der_private_key(der.first_element(pkcs8), password=None)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CryptoError(
            ErrorCode.PROVIDER_ERROR, f"the token exported an unreadable {algorithm} key: {exc}"
        ) from None


def export_private(algorithm: str, private: Any, fmt: KeyFormat) -> bytes:
    """A private key in PKCS8_DER, PEM or RAW (Ed25519 seed, EC scalar)."""
    nothing = ser.NoEncryption()
    if fmt is KeyFormat.PKCS8_DER:
        return bytes(private.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, nothing))
    if fmt is KeyFormat.PEM:
        return bytes(private.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, nothing))
    if fmt is KeyFormat.RAW:
        if isinstance(private, ed25519.Ed25519PrivateKey):
            return private.private_bytes_raw()
        if isinstance(private, ec.EllipticCurvePrivateKey):
            size = (private.curve.key_size + 7) // 8
            return private.private_numbers().private_value.to_bytes(size, "big")
        raise invalid_argument(f"{algorithm} private keys have no RAW form; use PKCS8_DER")
    raise invalid_argument(f"{algorithm} private keys are exported as PKCS8_DER, PEM or RAW, not {fmt.value}")
