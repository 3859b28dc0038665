"""ML-KEM on the oqs provider: round trips, implicit rejection, ciphertext checks, and
interoperation with pyca/cryptography (OpenSSL) in both directions."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptostack_oqs.keys import SharedSecret
from cryptostack_oqs.provider import OQSProvider

from cryptostack_core.sdk import CryptoError, ErrorCode, KeyFormat
from cryptostack_core.sdk import KeyOperationPermission as P

pytestmark = pytest.mark.liboqs

PYCA = {"ML-KEM-768": mlkem.MLKEM768PrivateKey, "ML-KEM-1024": mlkem.MLKEM1024PrivateKey}


def _secret(key: object) -> bytes:
    assert isinstance(key, SharedSecret) and key.algorithm == "GENERIC-SECRET"
    return key.secret


@pytest.mark.parametrize(
    "algorithm,ct_size", [("ML-KEM-512", 768), ("ML-KEM-768", 1088), ("ML-KEM-1024", 1568)]
)
def test_round_trip_and_implicit_rejection(provider: OQSProvider, algorithm: str, ct_size: int) -> None:
    pair = provider.generate_key(algorithm, P.ENCAPSULATE | P.DECAPSULATE)
    public = provider.import_key(
        algorithm, provider.export_public_key(pair), KeyFormat.SPKI_DER, P.ENCAPSULATE
    )
    ciphertext, sent = provider.encapsulate(algorithm, public, P.DERIVE)
    assert len(ciphertext) == ct_size and len(_secret(sent)) == 32
    received = provider.decapsulate(algorithm, pair, ciphertext, P.DERIVE)
    assert _secret(received) == _secret(sent)
    # a forged ciphertext decapsulates (FIPS 203 implicit rejection) to an unrelated secret,
    # the same one every time
    forged = bytearray(ciphertext)
    forged[10] ^= 0x01
    first = _secret(provider.decapsulate(algorithm, pair, bytes(forged), P.DERIVE))
    again = _secret(provider.decapsulate(algorithm, pair, bytes(forged), P.DERIVE))
    assert first == again != _secret(sent)
    for wrong in (ciphertext[:-1], ciphertext + b"\x00", b""):
        with pytest.raises(CryptoError) as exc:
            provider.decapsulate(algorithm, pair, wrong, P.DERIVE)
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT and str(ct_size) in exc.value.message
    with pytest.raises(CryptoError) as exc:
        provider.decapsulate(algorithm, public, ciphertext, P.DERIVE)
    assert exc.value.code is ErrorCode.KEY_OPERATION_NOT_PERMITTED
    # two encapsulations to one key give different secrets
    assert _secret(provider.encapsulate(algorithm, public, P.DERIVE)[1]) != _secret(sent)


@pytest.mark.parametrize("algorithm", sorted(PYCA))
def test_interoperates_with_pyca_both_ways(provider: OQSProvider, algorithm: str) -> None:
    # provider key pair, pyca encapsulates to its SPKI
    ours = provider.generate_key(algorithm, P.ENCAPSULATE | P.DECAPSULATE)
    from cryptography.hazmat.primitives import serialization as ser

    peer_public = ser.load_der_public_key(provider.export_public_key(ours))
    secret, ciphertext = peer_public.encapsulate()  # type: ignore[union-attr]
    assert _secret(provider.decapsulate(algorithm, ours, ciphertext, P.DERIVE)) == secret
    # pyca key pair, the provider encapsulates to its raw public key
    theirs = PYCA[algorithm].generate()  # type: ignore[attr-defined]
    public = provider.import_key(
        algorithm, theirs.public_key().public_bytes_raw(), KeyFormat.RAW, P.ENCAPSULATE
    )
    ciphertext, sent = provider.encapsulate(algorithm, public, P.DERIVE)
    assert theirs.decapsulate(ciphertext) == _secret(sent)
    # the same key pair on both sides from one seed
    seed = os.urandom(64)
    pair = provider.import_key(algorithm, seed, KeyFormat.SEED, P.DECAPSULATE)
    reference = PYCA[algorithm].from_seed_bytes(seed)  # type: ignore[attr-defined]
    secret, ciphertext = reference.public_key().encapsulate()
    assert _secret(provider.decapsulate(algorithm, pair, ciphertext, P.DERIVE)) == secret


def test_kem_refuses_signature_keys(provider: OQSProvider) -> None:
    key = provider.generate_key("ML-DSA-65", P.SIGN)
    with pytest.raises(CryptoError) as exc:
        provider.encapsulate("ML-DSA-65", key, P.DERIVE)
    assert exc.value.code is ErrorCode.UNSUPPORTED_ALGORITHM
    with pytest.raises(CryptoError) as exc:
        provider.encapsulate("ML-KEM-768", key, P.DERIVE)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_encaps_vectors_with_fixed_randomness(provider: OQSProvider) -> None:
    """The runner can only check lengths for Wycheproof's encapsulation vectors (the API takes
    no randomness m). Here the key bytes the provider accepted go through liboqs's public
    ``OQS_KEM_encaps_derand`` with m, and c and K must match -- and every invalid key is
    refused at import."""
    import ctypes
    import json

    from cryptostack_oqs import library

    from cryptostack_core.testing import wycheproof as wp

    oqs = library.import_oqs()  # never a bare `import oqs` (see cryptostack_oqs.library)

    data = json.loads((wp.vectors_directory() / "mlkem_768_encaps_test.json").read_text())
    checked = refused = 0
    kem = oqs.KeyEncapsulation("ML-KEM-768")
    try:
        for group in data["testGroups"]:
            for case in group["tests"]:
                material = bytes.fromhex(case["ek"])
                if case["result"] == "invalid":
                    with pytest.raises(CryptoError) as exc:
                        provider.import_key("ML-KEM-768", material, KeyFormat.RAW, P.ENCAPSULATE)
                    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
                    refused += 1
                    continue
                key = provider.import_key("ML-KEM-768", material, KeyFormat.RAW, P.ENCAPSULATE)
                public = provider.export_public_key(key, KeyFormat.RAW)
                ciphertext = ctypes.create_string_buffer(1088)
                shared = ctypes.create_string_buffer(32)
                status = oqs.native().OQS_KEM_encaps_derand(
                    kem._kem, ciphertext, shared, public, bytes.fromhex(case["m"])
                )
                assert status == 0
                assert (ciphertext.raw.hex(), shared.raw.hex()) == (case["c"], case["K"])
                checked += 1
    finally:
        kem.free()
    assert (checked, refused) == (133, 132)
