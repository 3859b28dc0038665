"""Keys held by the oqs provider, how they are made, and their stored form.

An :class:`OQSKey` keeps liboqs-format bytes: the public key, the secret key when it is a
key pair, and for ML-KEM the 64-byte seed ``d || z`` it was generated from (kept so the
key can be exported as a seed or a seed-form PKCS#8 -- byte-identical to pyca/OpenSSL --
and moved to the OpenSSL provider). ML-KEM keys are generated from a fresh
``os.urandom(64)`` seed through liboqs's derandomised key generation, which is the same
computation liboqs's own key generation does with its system random source.

A key pair that enters from outside is checked before it is accepted: ML-KEM with the
FIPS 203 checks, ML-DSA by recomputing the public key (``t0`` and ``tr`` must match),
Falcon by recomputing the public key and signing/verifying a test message, SLH-DSA by its
length (its public key is part of the secret key). A public key that comes with the pair
(PKCS#8 v2) must equal the derived one.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import cbor2

from cryptostack_core.sdk import CryptoError, ErrorCode, ProviderKey, invalid_argument

from . import falcon_public, mldsa_public, mlkem_checks
from .mechanisms import Family, Mechanism

SHARED_SECRET_ALGORITHM = "GENERIC-SECRET"
_BLOB_VERSION = 1
_FALCON_LOGN = {"Falcon-512": 9, "Falcon-1024": 10}


class OQSKey(ProviderKey):
    """A post-quantum public key or key pair in liboqs encoding."""

    def __init__(
        self, mechanism: Mechanism, public: bytes, secret: bytes | None = None, seed: bytes | None = None
    ) -> None:
        self.algorithm = mechanism.algorithm
        self.mechanism = mechanism
        self.public = bytes(public)
        self.secret = bytes(secret) if secret is not None else None
        self.seed = bytes(seed) if seed is not None else None
        self.has_private = secret is not None
        self.extractable = True
        self.size = 0

    def require_secret(self) -> bytes:
        """The secret key; KEY_OPERATION_NOT_PERMITTED for a public key alone."""
        if self.secret is None:
            raise CryptoError(
                ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                f"this {self.algorithm} key is a public key; the operation needs the key pair",
            )
        return self.secret

    def __repr__(self) -> str:
        return f"OQSKey({self.algorithm}, {'pair' if self.has_private else 'public'})"


class SharedSecret(ProviderKey):
    """A KEM shared secret (GENERIC-SECRET); extractable so the daemon can move it to a
    provider that derives or MACs with it."""

    def __init__(self, secret: bytes) -> None:
        self.algorithm = SHARED_SECRET_ALGORITHM
        self.secret = bytes(secret)
        self.has_private = True
        self.extractable = True
        self.size = len(self.secret)

    def __repr__(self) -> str:
        return f"SharedSecret({self.size} bytes)"


def _liboqs_failure(what: str, mech: Mechanism, exc: Exception) -> CryptoError:
    return CryptoError(
        ErrorCode.PROVIDER_ERROR, f"liboqs could not {what} {mech.algorithm} ({mech.liboqs}): {exc}"
    )


def generate(oqs: ModuleType, mech: Mechanism) -> OQSKey:
    """A fresh key pair."""
    if mech.family is Family.ML_KEM and mech.seed_size:
        return from_seed(oqs, mech, os.urandom(mech.seed_size))
    try:
        if mech.family.is_kem:
            with oqs.KeyEncapsulation(mech.liboqs) as kem:
                public = kem.generate_keypair()
                secret = kem.export_secret_key()
        else:
            with oqs.Signature(mech.liboqs) as sig:
                public = sig.generate_keypair()
                secret = sig.export_secret_key()
    except RuntimeError as exc:
        raise _liboqs_failure("generate a key for", mech, exc) from None
    return OQSKey(mech, public, secret)


def from_seed(oqs: ModuleType, mech: Mechanism, seed: bytes) -> OQSKey:
    """An ML-KEM key pair from its 64-byte seed d || z (FIPS 203 ML-KEM.KeyGen_internal)."""
    if mech.family is not Family.ML_KEM or not mech.seed_size:
        raise CryptoError(
            ErrorCode.UNSUPPORTED_ALGORITHM,
            f"liboqs offers no key generation from a seed for {mech.algorithm}",
        )
    if len(seed) != mech.seed_size:
        raise invalid_argument(
            f"an {mech.algorithm} seed is {mech.seed_size} bytes (d || z), got {len(seed)}"
        )
    try:
        with oqs.KeyEncapsulation(mech.liboqs) as kem:
            public = kem.generate_keypair_seed(bytes(seed))
            secret = kem.export_secret_key()
    except (RuntimeError, ValueError) as exc:
        raise _liboqs_failure("derive a key from a seed for", mech, exc) from None
    return OQSKey(mech, public, secret, seed)


def public_key(mech: Mechanism, public: bytes) -> OQSKey:
    """A checked public key."""
    if len(public) != mech.public_key_size:
        raise invalid_argument(
            f"an {mech.algorithm} public key is {mech.public_key_size} bytes, got {len(public)}"
        )
    try:
        if mech.family is Family.ML_KEM:
            mlkem_checks.check_encapsulation_key(mech.algorithm, public)
        elif mech.family is Family.FALCON:
            falcon_public.decode_public(_FALCON_LOGN[mech.algorithm], public)
    except (mlkem_checks.InvalidKemKey, falcon_public.InvalidFalconKey) as exc:
        raise invalid_argument(str(exc)) from None
    return OQSKey(mech, public)


def key_pair(oqs: ModuleType, mech: Mechanism, secret: bytes, public: bytes | None = None) -> OQSKey:
    """A checked key pair from a liboqs-format secret key (and optionally its public key)."""
    if len(secret) != mech.secret_key_size:
        raise invalid_argument(
            f"an {mech.algorithm} secret key is {mech.secret_key_size} bytes, got {len(secret)}"
        )
    try:
        if mech.family is Family.ML_KEM:
            derived = mlkem_checks.check_decapsulation_key(mech.algorithm, secret)
        elif mech.family is Family.ML_DSA:
            derived = mldsa_public.public_key_from_secret(mech.algorithm, secret)
        elif mech.family is Family.SLH_DSA:
            derived = secret[len(secret) // 2 :]  # SK.seed || SK.prf || PK.seed || PK.root
        else:
            derived = falcon_public.public_key_from_secret(_FALCON_LOGN[mech.algorithm], secret)
            _self_test_signature(oqs, mech, secret, derived)
    except (mlkem_checks.InvalidKemKey, mldsa_public.InconsistentKey, falcon_public.InvalidFalconKey) as exc:
        raise invalid_argument(f"not a valid {mech.algorithm} secret key: {exc}") from None
    if public is not None and bytes(public) != derived:
        raise invalid_argument(
            f"the public key given with the {mech.algorithm} secret key does not belong to it"
        )
    return OQSKey(mech, derived, secret)


def _self_test_signature(oqs: ModuleType, mech: Mechanism, secret: bytes, public: bytes) -> None:
    message = b"cryptostack oqs key import self-test"
    try:
        with oqs.Signature(mech.liboqs, secret) as sig:
            ok = sig.verify(message, sig.sign(message), public)
    except RuntimeError:
        ok = False
    if not ok:
        raise falcon_public.InvalidFalconKey(
            "a test signature does not verify under the recovered public key"
        )


# --- stored form ----------------------------------------------------------------------


def to_blob(key: OQSKey | SharedSecret) -> bytes:
    """The key material the key store wraps at rest (CBOR; secret)."""
    if isinstance(key, SharedSecret):
        return cbor2.dumps({"v": _BLOB_VERSION, "alg": key.algorithm, "secret": key.secret})
    record: dict[str, Any] = {
        "v": _BLOB_VERSION,
        "alg": key.algorithm,
        "mech": key.mechanism.liboqs,
        "pk": key.public,
        "sk": key.require_secret(),
    }
    if key.seed is not None:
        record["seed"] = key.seed
    return cbor2.dumps(record)


def from_blob(blob: bytes, algorithm: str, mechanisms: dict[str, Mechanism]) -> OQSKey | SharedSecret:
    """Inverse of :func:`to_blob`; checks the record names ``algorithm``."""
    try:
        record = cbor2.loads(blob)
    except Exception as exc:  # cbor2 raises several types on bad input
        raise invalid_argument(f"stored oqs key is not readable: {exc}") from None
    if not isinstance(record, dict) or record.get("v") != _BLOB_VERSION:
        raise invalid_argument("stored oqs key has an unknown format version")
    if record.get("alg") != algorithm:
        raise invalid_argument(f"stored oqs key is a {record.get('alg')} key, not {algorithm}")
    if algorithm == SHARED_SECRET_ALGORITHM:
        return SharedSecret(bytes(record["secret"]))
    mech = mechanisms.get(algorithm)
    if mech is None:
        raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"the loaded liboqs does not offer {algorithm}")
    public, secret = bytes(record["pk"]), bytes(record["sk"])
    if len(public) != mech.public_key_size or len(secret) != mech.secret_key_size:
        raise invalid_argument(f"stored {algorithm} key has the wrong sizes for this liboqs")
    seed = record.get("seed")
    return OQSKey(mech, public, secret, bytes(seed) if seed is not None else None)
