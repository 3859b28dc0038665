"""Key agreement: X25519 and ECDH on P-256. The shared secret becomes a GENERIC-SECRET key.

Peer public keys are accepted as SubjectPublicKeyInfo DER (any of them), as the raw 32 bytes
for X25519, or as a SEC1 point (uncompressed, or compressed) for P-256. A peer key that is
malformed, on another curve or not on the curve at all is refused with INVALID_ARGUMENT.

X25519 low-order peer keys: OpenSSL refuses an all-zero shared secret (RFC 7748 section 6.1
allows the check, RFC 9180 and TLS 1.3 require it), and so does this provider, with
INVALID_ARGUMENT. Non-canonical u-coordinates and points on the twist are accepted as the
RFC 7748 function defines them.
"""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from cryptostack_core.sdk import CryptoError, ErrorCode, ProviderKey, invalid_argument

from .keys import AsymmetricKey, SecretKey

AGREEMENTS = ("X25519", "ECDH-P256")
"""Key-agreement algorithms of this provider."""

_X25519_RAW = 32


def agree(algorithm: str, key: ProviderKey, peer_public: bytes) -> SecretKey:
    """Shared secret of our private ``key`` and ``peer_public``, as a GENERIC-SECRET key."""
    peer_public = bytes(peer_public)
    private = key.private if isinstance(key, AsymmetricKey) else None
    if algorithm == "X25519":
        if not isinstance(private, x25519.X25519PrivateKey):
            raise invalid_argument(
                f"X25519 agreement needs an X25519 key pair, not {key.algorithm}{_public_hint(key)}"
            )
        x_peer = _x25519_peer(peer_public)
        try:
            secret = private.exchange(x_peer)
        except ValueError:
            raise invalid_argument(
                "the X25519 peer key is a low-order point (the shared secret would be all zero)"
            ) from None
        return SecretKey("GENERIC-SECRET", secret)
    if algorithm == "ECDH-P256":
        if not (
            isinstance(private, ec.EllipticCurvePrivateKey)
            and isinstance(private.curve, ec.SECP256R1)
        ):
            raise invalid_argument(
                f"ECDH-P256 needs a P-256 key pair, not {key.algorithm}{_public_hint(key)}"
            )
        ec_peer = _p256_peer(peer_public)
        try:
            secret = private.exchange(ec.ECDH(), ec_peer)
        except ValueError as exc:
            raise invalid_argument(f"ECDH-P256 with this peer key failed: {exc}") from None
        return SecretKey("GENERIC-SECRET", secret)
    raise CryptoError(
        ErrorCode.UNSUPPORTED_ALGORITHM, f"the openssl provider has no key agreement {algorithm}"
    )


def _public_hint(key: ProviderKey) -> str:
    return " public key alone" if not key.has_private else ""


def _x25519_peer(data: bytes) -> x25519.X25519PublicKey:
    try:
        if len(data) == _X25519_RAW:
            return x25519.X25519PublicKey.from_public_bytes(data)
        peer = ser.load_der_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise invalid_argument(
            f"the X25519 peer key is neither 32 raw bytes nor an X25519 SubjectPublicKeyInfo: {exc}"
        ) from None
    if not isinstance(peer, x25519.X25519PublicKey):
        raise invalid_argument("the peer SubjectPublicKeyInfo is not an X25519 key")
    return peer


def _p256_peer(data: bytes) -> ec.EllipticCurvePublicKey:
    try:
        if data[:1] in (b"\x02", b"\x03", b"\x04"):
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data)
        peer = ser.load_der_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise invalid_argument(
            f"the ECDH-P256 peer key is not a valid P-256 point or SubjectPublicKeyInfo: {exc}"
        ) from None
    if not (isinstance(peer, ec.EllipticCurvePublicKey) and isinstance(peer.curve, ec.SECP256R1)):
        raise invalid_argument("the ECDH-P256 peer key is not a P-256 public key")
    return peer
