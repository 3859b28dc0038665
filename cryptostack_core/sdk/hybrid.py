"""Hybrid post-quantum constructions, independent of any provider.

Three specifications, each pinned to the revision implemented (the docs name them too):

* **X-Wing** -- draft-connolly-cfrg-xwing-kem-10: X25519 + ML-KEM-768 behind a SHA3-256
  combiner. The decapsulation key is a 32-byte seed expanded with SHAKE256 into the ML-KEM
  seed ``d || z`` and the X25519 scalar.
* **X25519MLKEM768** -- draft-ietf-tls-ecdhe-mlkem-04, the TLS 1.3 hybrid group 0x11EC:
  ML-KEM-768 first, X25519 second, in the public key (1216 bytes), the ciphertext (1120
  bytes) and the shared secret (their 64-byte concatenation, no hash).
* **Composite ML-DSA** -- draft-ietf-lamps-pq-composite-sigs-19: ML-DSA paired with ECDSA,
  EdDSA or RSA; one public key, one signature, both halves must verify. Both halves sign
  the message representative ``M' = Prefix || Label || len(ctx) || ctx || PH(M)``; the
  ML-DSA half signs it with the label as its FIPS 204 context string.

What lives here is everything that does not need a private key: splitting and joining keys,
ciphertexts and signatures with their length checks, the X-Wing seed expansion and combiner,
the composite message representative, the composite encodings of the traditional half
(SEC1 points, ECPrivateKey without the public key, PKCS#1 RSA, raw EdDSA), and the
SubjectPublicKeyInfo / PKCS#8 wrapping with each specification's OID. A provider holding
both halves, or the daemon composing halves held by two providers, does the key operations
(ML-KEM, X25519, ML-DSA, ECDSA ...) and calls these functions around them.

Bad caller input (wrong lengths, malformed DER, a key of another algorithm) raises
``CryptoError(INVALID_ARGUMENT)``. This module imports only ``cryptography`` and the core's
``errors`` and ``algorithms`` modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from cryptostack_core.sdk import der
from cryptostack_core.wire.algorithms import REGISTRY
from cryptostack_core.wire.errors import CryptoError, invalid_argument

__all__ = [
    "COMPOSITE_PREFIX",
    "COMPOSITE_SIGNATURES",
    "HYBRID_KEMS",
    "MLDSA_SEED_SIZE",
    "X25519MLKEM768",
    "XWING",
    "XWING_LABEL",
    "CompositeSignatureSpec",
    "HybridKemSpec",
    "MAX_DER_SIZE",
    "TraditionalPrivateKey",
    "TraditionalPublicKey",
    "TraditionalSpec",
    "composite_by_oid",
    "decode_pkcs8",
    "decode_spki",
    "encode_pkcs8",
    "encode_spki",
    "hybrid_kem_by_oid",
    "pem_decode",
    "pem_encode",
]


# ============================================================================================
# Hybrid KEMs: X-Wing and X25519MLKEM768
# ============================================================================================

XWING_LABEL = b"\\.//^\\"
"""The X-Wing combiner label ``\\./`` ``/^\\`` (hex 5c2e2f2f5e5c), hashed last."""

_MLKEM768_PUBLIC = 1184
_MLKEM768_CIPHERTEXT = 1088
_MLKEM768_SEED = 64
_X25519_SIZE = 32


@dataclass(frozen=True)
class HybridKemSpec:
    """One hybrid KEM of ML-KEM-768 and X25519, with the ML-KEM part first everywhere.

    ``private_key_size`` is the decapsulation key as stored and exported: the X-Wing seed
    (32 bytes), or for X25519MLKEM768 -- which the TLS draft defines only as ephemeral shares
    -- this project's encoding ``ML-KEM seed d||z (64) || X25519 scalar (32)``.
    """

    name: str
    private_key_size: int
    shared_secret_size: int
    oid: str | None
    """OID of SubjectPublicKeyInfo / PKCS#8 encodings; None where the specification
    defines none (then only RAW and SEED exist)."""
    reference: str
    hashed: bool
    """True for X-Wing (SHAKE256 seed expansion and the SHA3-256 combiner), False for the
    TLS group (split 96-byte key, concatenated secrets)."""
    mlkem_public_size: int = _MLKEM768_PUBLIC
    mlkem_ciphertext_size: int = _MLKEM768_CIPHERTEXT
    x25519_size: int = _X25519_SIZE

    @property
    def public_key_size(self) -> int:
        """Encapsulation key: ML-KEM-768 encapsulation key || X25519 public key."""
        return self.mlkem_public_size + self.x25519_size

    @property
    def ciphertext_size(self) -> int:
        """Ciphertext: ML-KEM-768 ciphertext || X25519 ephemeral public key."""
        return self.mlkem_ciphertext_size + self.x25519_size

    def split_public_key(self, public_key: bytes) -> tuple[bytes, bytes]:
        """(ML-KEM encapsulation key, X25519 public key); the length must be exact."""
        public_key = bytes(public_key)
        if len(public_key) != self.public_key_size:
            raise invalid_argument(
                f"an {self.name} public key is {self.public_key_size} bytes long, got {len(public_key)}"
            )
        return public_key[: self.mlkem_public_size], public_key[self.mlkem_public_size :]

    def join_public_key(self, mlkem_public: bytes, x25519_public: bytes) -> bytes:
        """The encapsulation key from its halves."""
        if len(mlkem_public) != self.mlkem_public_size or len(x25519_public) != self.x25519_size:
            raise invalid_argument(
                f"{self.name} public key halves are {self.mlkem_public_size} and {self.x25519_size} bytes"
            )
        return bytes(mlkem_public) + bytes(x25519_public)

    def split_ciphertext(self, ciphertext: bytes) -> tuple[bytes, bytes]:
        """(ML-KEM ciphertext, X25519 ephemeral public key); the length must be exact, so a
        truncated or oversized ciphertext is INVALID_ARGUMENT before any key is touched."""
        ciphertext = bytes(ciphertext)
        if len(ciphertext) != self.ciphertext_size:
            raise invalid_argument(
                f"an {self.name} ciphertext is {self.ciphertext_size} bytes long, got {len(ciphertext)}"
            )
        return ciphertext[: self.mlkem_ciphertext_size], ciphertext[self.mlkem_ciphertext_size :]

    def join_ciphertext(self, mlkem_ciphertext: bytes, x25519_ephemeral: bytes) -> bytes:
        """The ciphertext from its halves."""
        if len(mlkem_ciphertext) != self.mlkem_ciphertext_size or len(x25519_ephemeral) != self.x25519_size:
            raise invalid_argument(
                f"{self.name} ciphertext halves are {self.mlkem_ciphertext_size} and {self.x25519_size} bytes"
            )
        return bytes(mlkem_ciphertext) + bytes(x25519_ephemeral)

    def expand_private_key(self, private_key: bytes) -> tuple[bytes, bytes]:
        """(ML-KEM-768 seed d||z, X25519 scalar) of a decapsulation key.

        X-Wing: ``SHAKE256(sk, 96 bytes)`` split 64 | 32 (expandDecapsulationKey).
        X25519MLKEM768: the 96-byte encoding split 64 | 32.
        """
        private_key = bytes(private_key)
        if len(private_key) != self.private_key_size:
            raise invalid_argument(
                f"an {self.name} private key is {self.private_key_size} bytes long, got {len(private_key)}"
            )
        if self.hashed:
            shake = hashes.Hash(hashes.SHAKE256(_MLKEM768_SEED + _X25519_SIZE))
            shake.update(private_key)
            private_key = shake.finalize()
        return private_key[:_MLKEM768_SEED], private_key[_MLKEM768_SEED:]

    def combine(
        self, mlkem_secret: bytes, x25519_secret: bytes, x25519_ciphertext: bytes, x25519_public: bytes
    ) -> bytes:
        """The shared secret from both halves' secrets.

        X-Wing: ``SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel)``.
        X25519MLKEM768: ``ss_M || ss_X`` (the TLS key schedule hashes it later).
        """
        parts = (mlkem_secret, x25519_secret, x25519_ciphertext, x25519_public)
        if any(len(part) != 32 for part in parts):
            raise invalid_argument(f"{self.name} combiner inputs are 32 bytes each")
        if not self.hashed:
            return bytes(mlkem_secret) + bytes(x25519_secret)
        sha3 = hashes.Hash(hashes.SHA3_256())
        for part in (*parts, XWING_LABEL):
            sha3.update(part)
        return sha3.finalize()


XWING = HybridKemSpec(
    name="X-Wing",
    private_key_size=32,
    shared_secret_size=32,
    oid="1.3.6.1.4.1.62253.25722",
    reference="draft-connolly-cfrg-xwing-kem-10",
    hashed=True,
)
"""X-Wing (HPKE KEM and TLS group 0x647a)."""

X25519MLKEM768 = HybridKemSpec(
    name="X25519MLKEM768",
    private_key_size=_MLKEM768_SEED + _X25519_SIZE,
    shared_secret_size=64,
    oid=None,
    reference="draft-ietf-tls-ecdhe-mlkem-04",
    hashed=False,
)
"""The TLS 1.3 hybrid group X25519MLKEM768 (0x11EC) as a KEM."""

HYBRID_KEMS: dict[str, HybridKemSpec] = {spec.name: spec for spec in (XWING, X25519MLKEM768)}
"""Hybrid KEMs by canonical algorithm name."""


def hybrid_kem_by_oid(oid: str) -> HybridKemSpec | None:
    """The hybrid KEM a SubjectPublicKeyInfo / PKCS#8 OID names, or None."""
    return next((spec for spec in HYBRID_KEMS.values() if spec.oid == oid), None)


# ============================================================================================
# Composite ML-DSA
# ============================================================================================

COMPOSITE_PREFIX = b"CompositeAlgorithmSignatures2025"
"""The fixed prefix of every composite message representative."""

MLDSA_SEED_SIZE = 32
"""The ML-DSA private key inside a composite private key is its 32-byte seed xi."""

TraditionalPublicKey = Union[
    ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey, rsa.RSAPublicKey
]
TraditionalPrivateKey = Union[
    ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey, rsa.RSAPrivateKey
]

_CURVES: dict[str, tuple[type[ec.EllipticCurve], str, int]] = {
    "secp256r1": (ec.SECP256R1, "1.2.840.10045.3.1.7", 32),
    "secp384r1": (ec.SECP384R1, "1.3.132.0.34", 48),
    "secp521r1": (ec.SECP521R1, "1.3.132.0.35", 66),
    "brainpoolP256r1": (ec.BrainpoolP256R1, "1.3.36.3.3.2.8.1.1.7", 32),
    "brainpoolP384r1": (ec.BrainpoolP384R1, "1.3.36.3.3.2.8.1.1.11", 48),
}
"""Curve name -> (pyca class, OID of the ECPrivateKey parameters, scalar length)."""

_HASHES: dict[str, hashes.HashAlgorithm] = {
    "SHA-256": hashes.SHA256(),
    "SHA-384": hashes.SHA384(),
    "SHA-512": hashes.SHA512(),
    "SHAKE256-64": hashes.SHAKE256(64),
}


@dataclass(frozen=True)
class TraditionalSpec:
    """The traditional half of a composite: which scheme, parameters and encodings.

    ``scheme`` is ``ECDSA``, ``EdDSA``, ``RSA-PSS`` or ``RSA-PKCS1v15``. ``hash_name`` is the
    digest the traditional signature applies to M' (ECDSA and RSA; empty for EdDSA).
    Encodings (draft section 5): ECDSA public keys are uncompressed SEC1 points, private keys
    RFC 5915 ECPrivateKey with the named curve and without the public key, signatures DER
    Ecdsa-Sig-Value; EdDSA raw; RSA PKCS#1 RSAPublicKey / RSAPrivateKey and raw signatures.
    """

    scheme: str
    name: str
    """The standalone algorithm of this half in the registry, where one exists
    (``ECDSA-P256``, ``Ed25519``, ``RSA-PSS-SHA256``), else empty -- what a second provider
    would be asked for when the halves live apart."""
    hash_name: str = ""
    curve: str = ""
    rsa_bits: int = 0
    pss_salt: int = 0

    @property
    def key_algorithm(self) -> str:
        """The standalone key type of this half (``ECDSA-P256``, ``Ed25519``, ``RSA-3072``)
        where :attr:`name` exists, else empty: what a second provider generates or imports
        when the halves live apart."""
        if not self.name:
            return ""
        return f"RSA-{self.rsa_bits}" if self.scheme.startswith("RSA") else self.name

    @property
    def public_key_size(self) -> int:
        """Exact encoded public key length, or 0 when it varies (RSA DER)."""
        if self.scheme == "ECDSA":
            return 2 * _CURVES[self.curve][2] + 1
        if self.scheme == "EdDSA":
            return 32 if self.curve == "Ed25519" else 57
        return 0

    @property
    def max_signature_size(self) -> int:
        """Longest encoded signature: DER ECDSA at its maximum, fixed otherwise."""
        if self.scheme == "ECDSA":
            # r and s are below the group order: at most bits // 8 + 1 content bytes each
            # (a 0x00 pad when the top bit is set), plus their tag and length octets.
            content = _CURVES[self.curve][0]().key_size // 8 + 1
            body = 2 * (content + 2)
            return body + (2 if body < 0x80 else 3)
        if self.scheme == "EdDSA":
            return 64 if self.curve == "Ed25519" else 114
        return self.rsa_bits // 8

    @property
    def min_signature_size(self) -> int:
        """Shortest encoded signature that can be well formed."""
        if self.scheme == "ECDSA":
            return 8  # SEQUENCE { INTEGER 1 byte, INTEGER 1 byte }
        return self.max_signature_size

    # --- generation --------------------------------------------------------------------
    def generate(self) -> TraditionalPrivateKey:
        """A fresh key of this half (RSA with e = 65537)."""
        if self.scheme == "ECDSA":
            return ec.generate_private_key(_CURVES[self.curve][0]())
        if self.scheme == "EdDSA":
            if self.curve == "Ed25519":
                return ed25519.Ed25519PrivateKey.generate()
            return ed448.Ed448PrivateKey.generate()
        return rsa.generate_private_key(65537, self.rsa_bits)

    # --- public keys ---------------------------------------------------------------------
    def is_public(self, key: object) -> bool:
        """Whether a pyca public key is of this half's type and parameters."""
        if self.scheme == "ECDSA":
            return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(
                key.curve, _CURVES[self.curve][0]
            )
        if self.scheme == "EdDSA":
            return isinstance(
                key, ed25519.Ed25519PublicKey if self.curve == "Ed25519" else ed448.Ed448PublicKey
            )
        return isinstance(key, rsa.RSAPublicKey) and key.key_size == self.rsa_bits

    def encode_public(self, key: TraditionalPublicKey) -> bytes:
        """The composite encoding of a pyca public key of this half."""
        if not self.is_public(key):
            raise invalid_argument(f"not a {self.description} public key")
        if isinstance(key, ec.EllipticCurvePublicKey):
            return key.public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
        if isinstance(key, rsa.RSAPublicKey):
            return key.public_bytes(ser.Encoding.DER, ser.PublicFormat.PKCS1)
        return key.public_bytes_raw()

    def decode_public(self, data: bytes) -> TraditionalPublicKey:
        """A pyca public key from the composite encoding; anything else INVALID_ARGUMENT."""
        data = bytes(data)
        try:
            key: object
            if self.scheme == "ECDSA":
                if len(data) != self.public_key_size or data[:1] != b"\x04":
                    raise ValueError("an uncompressed SEC1 point is required")
                key = ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[self.curve][0](), data)
            elif self.scheme == "EdDSA":
                cls = ed25519.Ed25519PublicKey if self.curve == "Ed25519" else ed448.Ed448PublicKey
                key = cls.from_public_bytes(data)
            else:
                if data[:1] != b"\x30":
                    raise ValueError("a DER RSAPublicKey is required")
                key = ser.load_der_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise invalid_argument(f"not a {self.description} public key: {exc}") from None
        if not self.is_public(key):
            raise invalid_argument(f"not a {self.description} public key")
        assert isinstance(
            key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey, rsa.RSAPublicKey)
        )
        if self.encode_public(key) != data:  # e.g. an RSA SubjectPublicKeyInfo, not PKCS#1
            raise invalid_argument(f"not the composite encoding of a {self.description} public key")
        return key

    # --- private keys --------------------------------------------------------------------
    def encode_private(self, key: TraditionalPrivateKey) -> bytes:
        """The composite encoding of a pyca private key of this half."""
        if not self.is_public(key.public_key()):
            raise invalid_argument(f"not a {self.description} private key")
        if isinstance(key, ec.EllipticCurvePrivateKey):
            _, curve_oid, scalar_size = _CURVES[self.curve]
            scalar = key.private_numbers().private_value.to_bytes(scalar_size, "big")
            # RFC 5915 ECPrivateKey: version 1, the scalar, [0] the named curve, no public key
            return der.tlv(
                der.SEQUENCE,
                der.tlv(der.INTEGER, b"\x01")
                + der.tlv(der.OCTET_STRING, scalar)
                + der.tlv(der.CONTEXT_0_CONSTRUCTED, der.tlv(der.OID, der.encode_oid(curve_oid))),
            )
        if isinstance(key, rsa.RSAPrivateKey):
            return key.private_bytes(
                ser.Encoding.DER, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption()
            )
        return key.private_bytes_raw()

    def decode_private(self, data: bytes) -> TraditionalPrivateKey:
        """A pyca private key from the composite encoding; anything else INVALID_ARGUMENT."""
        data = bytes(data)
        try:
            key: object
            if self.scheme == "EdDSA":
                cls = ed25519.Ed25519PrivateKey if self.curve == "Ed25519" else ed448.Ed448PrivateKey
                key = cls.from_private_bytes(data)
            elif self.scheme == "ECDSA":
                key = self._decode_ec_private(data)
            else:
                if data[:1] != b"\x30":
                    raise ValueError("a DER RSAPrivateKey is required")
                key = ser.load_der_private_key(data, password=None)
        except CryptoError:
            raise
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise invalid_argument(f"not a {self.description} private key: {exc}") from None
        if not isinstance(
            key,
            (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey, rsa.RSAPrivateKey),
        ) or not self.is_public(key.public_key()):
            raise invalid_argument(f"not a {self.description} private key")
        if isinstance(key, rsa.RSAPrivateKey) and self.encode_private(key) != data:
            raise invalid_argument(
                f"not the composite encoding (PKCS#1 RSAPrivateKey) of a {self.description} private key"
            )
        return key

    def _decode_ec_private(self, data: bytes) -> ec.EllipticCurvePrivateKey:
        curve_cls, curve_oid, scalar_size = _CURVES[self.curve]
        fields = der.read_all(der.expect(data, der.SEQUENCE, "ECPrivateKey"))
        if len(fields) < 2 or fields[0] != (0x02, b"\x01") or fields[1][0] != 0x04:
            raise ValueError("ECPrivateKey needs version 1 and the private key")
        scalar = fields[1][1]
        public = None
        for tag, value in fields[2:]:
            if tag == 0xA0:
                ((inner_tag, oid),) = der.read_all(value)
                if inner_tag != der.OID or der.decode_oid(oid) != curve_oid:
                    raise ValueError(f"the key is not on {self.curve}")
            elif tag == 0xA1:
                ((inner_tag, bits),) = der.read_all(value)
                if inner_tag != 0x03 or bits[:1] != b"\x00":
                    raise ValueError("malformed publicKey")
                public = bits[1:]
            else:
                raise ValueError("unexpected ECPrivateKey field")
        if len(scalar) != scalar_size:
            raise ValueError(f"a {self.curve} private key is {scalar_size} bytes")
        key = ec.derive_private_key(int.from_bytes(scalar, "big"), curve_cls())
        if public is not None and public != key.public_key().public_bytes(
            ser.Encoding.X962, ser.PublicFormat.UncompressedPoint
        ):
            raise ValueError("the publicKey field does not match the private key")
        return key

    @property
    def ec_curve(self) -> ec.EllipticCurve | None:
        """The pyca curve of an ECDSA half (None for EdDSA and RSA)."""
        return _CURVES[self.curve][0]() if self.scheme == "ECDSA" else None

    @property
    def description(self) -> str:
        """Human name of this half, for messages."""
        if self.scheme == "ECDSA":
            return f"ECDSA {self.curve}"
        if self.scheme == "EdDSA":
            return self.curve
        return f"RSA-{self.rsa_bits}"

    @property
    def hash_algorithm(self) -> hashes.HashAlgorithm | None:
        """The pyca hash the traditional signature applies to M' (None for EdDSA)."""
        return _HASHES[self.hash_name] if self.hash_name else None


@dataclass(frozen=True)
class CompositeSignatureSpec:
    """One composite ML-DSA algorithm of draft-ietf-lamps-pq-composite-sigs."""

    name: str
    """Canonical registry name, e.g. ``ML-DSA-65-ECDSA-P256-SHA512``."""
    identifier: str
    """The draft's name, e.g. ``id-MLDSA65-ECDSA-P256-SHA512``."""
    oid: str
    label: bytes
    mldsa: str
    """The ML-DSA half's registry name (``ML-DSA-65``)."""
    prehash_name: str
    """PH: ``SHA-256``, ``SHA-512`` or ``SHAKE256-64`` (SHAKE256 with 64 bytes of output)."""
    traditional: TraditionalSpec

    @property
    def mldsa_public_key_size(self) -> int:
        """Length of the ML-DSA public key (FIPS 204)."""
        return REGISTRY.get(self.mldsa).public_key_size

    @property
    def mldsa_signature_size(self) -> int:
        """Length of the ML-DSA signature (FIPS 204)."""
        return REGISTRY.get(self.mldsa).signature_size

    @property
    def public_key_size(self) -> int:
        """Exact composite public key length, or 0 when the traditional half varies."""
        trad = self.traditional.public_key_size
        return self.mldsa_public_key_size + trad if trad else 0

    @property
    def max_signature_size(self) -> int:
        """Longest composite signature (the draft's size table)."""
        return self.mldsa_signature_size + self.traditional.max_signature_size

    # --- message representative ------------------------------------------------------------
    def prehash(self) -> hashes.Hash:
        """A fresh PH hashing object; feed it M, then pass its digest to
        :meth:`message_representative`."""
        return hashes.Hash(_HASHES[self.prehash_name])

    def message_representative(self, context: bytes, digest: bytes) -> bytes:
        """``M' = Prefix || Label || len(ctx) || ctx || PH(M)`` for the digest of M."""
        context = bytes(context)
        if len(context) > 255:
            raise invalid_argument(f"composite context strings are at most 255 bytes, got {len(context)}")
        if len(digest) != _HASHES[self.prehash_name].digest_size:
            raise invalid_argument(
                f"PH({self.prehash_name}) is {_HASHES[self.prehash_name].digest_size} bytes long"
            )
        return b"".join([COMPOSITE_PREFIX, self.label, bytes([len(context)]), context, bytes(digest)])

    # --- serialisation (draft section 5) -----------------------------------------------------
    def split_public_key(self, public_key: bytes) -> tuple[bytes, bytes]:
        """(ML-DSA public key, traditional public key encoding); lengths checked."""
        public_key = bytes(public_key)
        cut = self.mldsa_public_key_size
        expected = self.public_key_size
        if (expected and len(public_key) != expected) or len(public_key) <= cut:
            size = expected or f"more than {cut}"
            raise invalid_argument(f"an {self.name} public key is {size} bytes long, got {len(public_key)}")
        return public_key[:cut], public_key[cut:]

    def join_public_key(self, mldsa_public: bytes, traditional_public: bytes) -> bytes:
        """``mldsaPK || tradPK`` (SerializePublicKey)."""
        if len(mldsa_public) != self.mldsa_public_key_size:
            raise invalid_argument(f"an {self.mldsa} public key is {self.mldsa_public_key_size} bytes long")
        return bytes(mldsa_public) + bytes(traditional_public)

    def split_private_key(self, private_key: bytes) -> tuple[bytes, bytes]:
        """(ML-DSA seed, traditional private key encoding) (DeserializePrivateKey)."""
        private_key = bytes(private_key)
        if len(private_key) <= MLDSA_SEED_SIZE:
            raise invalid_argument(
                f"an {self.name} private key is longer than {MLDSA_SEED_SIZE} bytes, got {len(private_key)}"
            )
        return private_key[:MLDSA_SEED_SIZE], private_key[MLDSA_SEED_SIZE:]

    def join_private_key(self, mldsa_seed: bytes, traditional_private: bytes) -> bytes:
        """``mldsaSeed || tradSK`` (SerializePrivateKey)."""
        if len(mldsa_seed) != MLDSA_SEED_SIZE:
            raise invalid_argument(f"an ML-DSA seed is {MLDSA_SEED_SIZE} bytes long")
        return bytes(mldsa_seed) + bytes(traditional_private)

    def split_signature(self, signature: bytes) -> tuple[bytes, bytes] | None:
        """(ML-DSA signature, traditional signature), or None when the length cannot be a
        signature of this algorithm -- verification then reports "invalid signature", as the
        draft's Verify step 2 requires, rather than an error."""
        signature = bytes(signature)
        cut = self.mldsa_signature_size
        trad = len(signature) - cut
        if not self.traditional.min_signature_size <= trad <= self.traditional.max_signature_size:
            return None
        return signature[:cut], signature[cut:]

    def join_signature(self, mldsa_signature: bytes, traditional_signature: bytes) -> bytes:
        """``mldsaSig || tradSig`` (SerializeSignatureValue); lengths checked."""
        joined = bytes(mldsa_signature) + bytes(traditional_signature)
        if len(mldsa_signature) != self.mldsa_signature_size or self.split_signature(joined) is None:
            raise invalid_argument(f"component signatures of the wrong length for {self.name}")
        return joined


def _composite(
    level: int, ph: str, trad: TraditionalSpec, oid_arc: int, label: str, identifier: str
) -> CompositeSignatureSpec:
    name = f"ML-DSA-{level}-" + identifier.removeprefix(f"id-MLDSA{level}-")
    return CompositeSignatureSpec(
        name=name,
        identifier=identifier,
        oid=f"1.3.6.1.5.5.7.6.{oid_arc}",
        label=label.encode("ascii"),
        mldsa=f"ML-DSA-{level}",
        prehash_name=ph,
        traditional=trad,
    )


def _ecdsa(curve: str, hash_name: str, name: str = "") -> TraditionalSpec:
    return TraditionalSpec("ECDSA", name, hash_name=hash_name, curve=curve)


def _pss(bits: int) -> TraditionalSpec:
    hash_name, salt = ("SHA-384", 48) if bits == 4096 else ("SHA-256", 32)
    return TraditionalSpec(
        "RSA-PSS", "RSA-PSS-SHA256" if salt == 32 else "", hash_name=hash_name, rsa_bits=bits, pss_salt=salt
    )


def _pkcs15(bits: int, hash_name: str) -> TraditionalSpec:
    return TraditionalSpec("RSA-PKCS1v15", "", hash_name=hash_name, rsa_bits=bits)


_ED25519 = TraditionalSpec("EdDSA", "Ed25519", curve="Ed25519")
_ED448 = TraditionalSpec("EdDSA", "", curve="Ed448")

COMPOSITE_SIGNATURES: dict[str, CompositeSignatureSpec] = {
    spec.name: spec
    for spec in [
        _composite(
            44,
            "SHA-256",
            _pss(2048),
            37,
            "COMPSIG-MLDSA44-RSA2048-PSS-SHA256",
            "id-MLDSA44-RSA2048-PSS-SHA256",
        ),
        _composite(
            44,
            "SHA-256",
            _pkcs15(2048, "SHA-256"),
            38,
            "COMPSIG-MLDSA44-RSA2048-PKCS15-SHA256",
            "id-MLDSA44-RSA2048-PKCS15-SHA256",
        ),
        _composite(
            44, "SHA-512", _ED25519, 39, "COMPSIG-MLDSA44-Ed25519-SHA512", "id-MLDSA44-Ed25519-SHA512"
        ),
        _composite(
            44,
            "SHA-256",
            _ecdsa("secp256r1", "SHA-256", "ECDSA-P256"),
            40,
            "COMPSIG-MLDSA44-ECDSA-P256-SHA256",
            "id-MLDSA44-ECDSA-P256-SHA256",
        ),
        _composite(
            65,
            "SHA-512",
            _pss(3072),
            41,
            "COMPSIG-MLDSA65-RSA3072-PSS-SHA512",
            "id-MLDSA65-RSA3072-PSS-SHA512",
        ),
        _composite(
            65,
            "SHA-512",
            _pkcs15(3072, "SHA-256"),
            42,
            "COMPSIG-MLDSA65-RSA3072-PKCS15-SHA512",
            "id-MLDSA65-RSA3072-PKCS15-SHA512",
        ),
        _composite(
            65,
            "SHA-512",
            _pss(4096),
            43,
            "COMPSIG-MLDSA65-RSA4096-PSS-SHA512",
            "id-MLDSA65-RSA4096-PSS-SHA512",
        ),
        _composite(
            65,
            "SHA-512",
            _pkcs15(4096, "SHA-384"),
            44,
            "COMPSIG-MLDSA65-RSA4096-PKCS15-SHA512",
            "id-MLDSA65-RSA4096-PKCS15-SHA512",
        ),
        _composite(
            65,
            "SHA-512",
            _ecdsa("secp256r1", "SHA-256", "ECDSA-P256"),
            45,
            "COMPSIG-MLDSA65-ECDSA-P256-SHA512",
            "id-MLDSA65-ECDSA-P256-SHA512",
        ),
        _composite(
            65,
            "SHA-512",
            _ecdsa("secp384r1", "SHA-384", "ECDSA-P384"),
            46,
            "COMPSIG-MLDSA65-ECDSA-P384-SHA512",
            "id-MLDSA65-ECDSA-P384-SHA512",
        ),
        _composite(
            65,
            "SHA-512",
            _ecdsa("brainpoolP256r1", "SHA-256"),
            47,
            "COMPSIG-MLDSA65-ECDSA-BP256-SHA512",
            "id-MLDSA65-ECDSA-brainpoolP256r1-SHA512",
        ),
        _composite(
            65, "SHA-512", _ED25519, 48, "COMPSIG-MLDSA65-Ed25519-SHA512", "id-MLDSA65-Ed25519-SHA512"
        ),
        _composite(
            87,
            "SHA-512",
            _ecdsa("secp384r1", "SHA-384", "ECDSA-P384"),
            49,
            "COMPSIG-MLDSA87-ECDSA-P384-SHA512",
            "id-MLDSA87-ECDSA-P384-SHA512",
        ),
        _composite(
            87,
            "SHA-512",
            _ecdsa("brainpoolP384r1", "SHA-384"),
            50,
            "COMPSIG-MLDSA87-ECDSA-BP384-SHA512",
            "id-MLDSA87-ECDSA-brainpoolP384r1-SHA512",
        ),
        _composite(
            87, "SHAKE256-64", _ED448, 51, "COMPSIG-MLDSA87-Ed448-SHAKE256", "id-MLDSA87-Ed448-SHAKE256"
        ),
        _composite(
            87,
            "SHA-512",
            _pss(3072),
            52,
            "COMPSIG-MLDSA87-RSA3072-PSS-SHA512",
            "id-MLDSA87-RSA3072-PSS-SHA512",
        ),
        _composite(
            87,
            "SHA-512",
            _pss(4096),
            53,
            "COMPSIG-MLDSA87-RSA4096-PSS-SHA512",
            "id-MLDSA87-RSA4096-PSS-SHA512",
        ),
        _composite(
            87,
            "SHA-512",
            _ecdsa("secp521r1", "SHA-512"),
            54,
            "COMPSIG-MLDSA87-ECDSA-P521-SHA512",
            "id-MLDSA87-ECDSA-P521-SHA512",
        ),
    ]
}
"""Every composite ML-DSA algorithm of draft-ietf-lamps-pq-composite-sigs-19, by canonical
name (OIDs 1.3.6.1.5.5.7.6.37 to .54)."""


def composite_by_oid(oid: str) -> CompositeSignatureSpec | None:
    """The composite algorithm a SubjectPublicKeyInfo / PKCS#8 OID names, or None."""
    return next((spec for spec in COMPOSITE_SIGNATURES.values() if spec.oid == oid), None)


# ============================================================================================
# SubjectPublicKeyInfo, PKCS#8 and PEM for keys whose algorithm identifier has no parameters
# ============================================================================================

MAX_DER_SIZE = 64 * 1024
"""Largest SPKI / PKCS#8 / PEM input parsed (the largest composite key is under 4 KiB)."""


def encode_spki(oid: str, public_key: bytes) -> bytes:
    """SubjectPublicKeyInfo: ``AlgorithmIdentifier{oid, parameters absent}`` and the key as
    the BIT STRING's content, unwrapped (as both X-Wing and composite ML-DSA specify)."""
    return der.encode_spki(oid, bytes(public_key))


def decode_spki(encoded: bytes) -> tuple[str, bytes]:
    """(OID, public key bytes) of a SubjectPublicKeyInfo whose algorithm has no parameters."""
    try:
        return der.decode_spki(_bounded(encoded))
    except der.DerError as exc:
        raise invalid_argument(f"malformed SubjectPublicKeyInfo: {exc}") from None


def encode_pkcs8(oid: str, private_key: bytes) -> bytes:
    """PKCS#8 / OneAsymmetricKey version 0 with the raw key as the privateKey OCTET STRING
    (no inner wrapping) and no publicKey field."""
    return der.encode_pkcs8(oid, bytes(private_key))


def decode_pkcs8(encoded: bytes) -> tuple[str, bytes, bytes | None]:
    """(OID, private key bytes, public key bytes or None) of a OneAsymmetricKey (version 0
    or 1); attributes are ignored, the optional ``[1] publicKey`` is returned for the caller
    to check against the private key."""
    try:
        info = der.decode_pkcs8(_bounded(encoded))
    except der.DerError as exc:
        raise invalid_argument(f"malformed PKCS#8 private key: {exc}") from None
    return info.oid, info.private_key, info.public_key


def pem_encode(label: str, encoded: bytes) -> bytes:
    """RFC 7468 text: base64 in 64-character lines between BEGIN/END ``label`` lines."""
    return der.pem_encode(label, encoded)


def pem_decode(data: bytes) -> tuple[str, bytes]:
    """(label, DER) of the first PEM block in ``data``."""
    try:
        return der.pem_decode(_bounded(data))
    except der.DerError as exc:
        raise invalid_argument(f"malformed PEM: {exc}") from None


def _bounded(data: bytes) -> bytes:
    data = bytes(data)
    if len(data) > MAX_DER_SIZE:
        raise invalid_argument(f"encoded keys are at most {MAX_DER_SIZE} bytes")
    return data
