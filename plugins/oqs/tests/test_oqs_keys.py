"""Keys on the oqs provider: what is offered, generation, every import/export format, the
checks on imported material, and persistence."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem
from cryptostack_oqs.keys import OQSKey, SharedSecret
from cryptostack_oqs.provider import OQSProvider
from pqcrypto.sign import ml_dsa_44, ml_dsa_65, ml_dsa_87

from cryptostack_core.sdk import (
    REGISTRY,
    Capability,
    CryptoError,
    ErrorCode,
    KeyFormat,
    Operation,
    StoredKey,
    der,
)
from cryptostack_core.sdk import KeyOperationPermission as P

pytestmark = pytest.mark.liboqs

ML_KEM = ["ML-KEM-512", "ML-KEM-768", "ML-KEM-1024"]
ML_DSA = ["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"]
SLH_DSA = [
    f"SLH-DSA-{h}-{v}" for h in ("SHA2", "SHAKE") for v in ("128s", "128f", "192s", "192f", "256s", "256f")
]
FALCON = ["Falcon-512", "Falcon-1024"]
ALL = ML_KEM + ML_DSA + SLH_DSA + FALCON
WITH_OID = ML_KEM + ML_DSA + SLH_DSA

# (public, secret, signature or ciphertext) sizes as FIPS 203/204/205 and Falcon define them
SIZES = {
    "ML-KEM-512": (800, 1632, 768),
    "ML-KEM-768": (1184, 2400, 1088),
    "ML-KEM-1024": (1568, 3168, 1568),
    "ML-DSA-44": (1312, 2560, 2420),
    "ML-DSA-65": (1952, 4032, 3309),
    "ML-DSA-87": (2592, 4896, 4627),
    "Falcon-512": (897, 1281, 752),
    "Falcon-1024": (1793, 2305, 1462),
}
for _name, (_n, _sig) in {
    "128s": (16, 7856),
    "128f": (16, 17088),
    "192s": (24, 16224),
    "192f": (24, 35664),
    "256s": (32, 29792),
    "256f": (32, 49856),
}.items():
    for _h in ("SHA2", "SHAKE"):
        SIZES[f"SLH-DSA-{_h}-{_name}"] = (2 * _n, 4 * _n, _sig)


def _code(exc: pytest.ExceptionInfo[CryptoError]) -> ErrorCode:
    return exc.value.code


def test_every_algorithm_is_offered_with_standard_sizes(provider: OQSProvider) -> None:
    mechs = provider.mechanisms
    assert sorted(mechs) == sorted(ALL)
    for name, (pk, sk, third) in SIZES.items():
        mech = mechs[name]
        assert (mech.public_key_size, mech.secret_key_size) == (pk, sk), name
        if name.startswith("ML-KEM"):
            assert (mech.ciphertext_size, mech.shared_secret_size, mech.seed_size) == (third, 32, 64)
        else:
            assert mech.signature_size == third, name
            assert mech.signature_size == REGISTRY.get(name).signature_size
        assert mech.public_key_size == REGISTRY.get(name).public_key_size
        assert mech.context == (name.startswith(("ML-DSA", "SLH-DSA")))
    caps = set(provider.capabilities())
    assert Capability("ML-KEM-768", Operation.DECAPSULATE) in caps
    assert Capability("SLH-DSA-SHAKE-256s", Operation.SIGN) in caps
    assert Capability("ML-KEM-768", Operation.SIGN) not in caps
    assert len(caps) == 4 * len(ALL)
    assert provider.describe()["liboqs_version"].startswith("0.16")


def test_liboqs_spellings_are_aliases() -> None:
    assert REGISTRY.canonical("SLH_DSA_PURE_SHA2_128S") == "SLH-DSA-SHA2-128s"
    assert REGISTRY.canonical("SLH_DSA_PURE_SHAKE_256F") == "SLH-DSA-SHAKE-256f"
    assert REGISTRY.canonical("falcon-512") == "Falcon-512"
    assert REGISTRY.canonical("mlkem768") == "ML-KEM-768"


def test_run_inline_only_for_cheap_calls(provider: OQSProvider) -> None:
    cheap = [
        (Operation.ENCAPSULATE, 0, "ML-KEM-768"),
        (Operation.DECAPSULATE, 1088, "ML-KEM-768"),
        (Operation.VERIFY, 0, "ML-DSA-65"),
        (Operation.VERIFY, 0, "Falcon-512"),
        (Operation.SIGN, 64, "SLH-DSA-SHA2-128s"),
    ]  # an update only buffers
    slow = [
        (Operation.SIGN, 0, "ML-DSA-65"),
        (Operation.SIGN, 0, "SLH-DSA-SHA2-128s"),
        (Operation.VERIFY, 0, "SLH-DSA-SHA2-128f"),
        (Operation.GENERATE_KEY, 0, "ML-KEM-768"),
        (Operation.VERIFY, 0, None),
        (Operation.SIGN, 1 << 20, "ML-DSA-65"),
    ]
    assert all(provider.run_inline(op, size, algorithm=alg) for op, size, alg in cheap)
    assert not any(provider.run_inline(op, size, algorithm=alg) for op, size, alg in slow)


@pytest.mark.parametrize("algorithm", ALL)
def test_generate_and_round_trip_every_format(provider: OQSProvider, algorithm: str) -> None:
    key = provider.generate_key(algorithm, P.NONE)
    assert isinstance(key, OQSKey) and key.has_private and key.extractable
    pk_size, sk_size, _ = SIZES[algorithm]
    raw_public = provider.export_public_key(key, KeyFormat.RAW)
    raw_secret = provider.export_key(key, KeyFormat.RAW)
    assert (len(raw_public), len(raw_secret)) == (pk_size, sk_size)

    pair = provider.import_key(algorithm, raw_secret, KeyFormat.RAW, P.NONE)
    assert pair.has_private
    assert provider.export_public_key(pair, KeyFormat.RAW) == raw_public  # derived, checked
    public = provider.import_key(algorithm, raw_public, KeyFormat.RAW, P.NONE)
    assert not public.has_private
    with pytest.raises(CryptoError) as exc:
        provider.export_key(public, KeyFormat.RAW)
    assert _code(exc) is ErrorCode.INVALID_ARGUMENT

    if algorithm in FALCON:
        for fmt in (KeyFormat.SPKI_DER, KeyFormat.PEM):
            with pytest.raises(CryptoError) as exc:
                provider.export_public_key(key, fmt)
            assert _code(exc) is ErrorCode.INVALID_ARGUMENT and "OID" in exc.value.message
        for fmt in (KeyFormat.PKCS8_DER, KeyFormat.PEM):
            with pytest.raises(CryptoError):
                provider.export_key(key, fmt)
        assert provider.import_formats(algorithm) == {KeyFormat.RAW}
        return

    spki = provider.export_public_key(key)  # SPKI_DER is the default
    again = provider.import_key(algorithm, spki, KeyFormat.SPKI_DER, P.NONE)
    assert provider.export_public_key(again, KeyFormat.RAW) == raw_public
    pkcs8 = provider.export_key(key, KeyFormat.PKCS8_DER)
    reloaded = provider.import_key(algorithm, pkcs8, KeyFormat.PKCS8_DER, P.NONE)
    assert provider.export_key(reloaded, KeyFormat.RAW) == raw_secret
    pem_public = provider.export_public_key(key, KeyFormat.PEM)
    pem_private = provider.export_key(key, KeyFormat.PEM)
    assert pem_public.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert pem_private.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert (
        provider.export_public_key(
            provider.import_key(algorithm, pem_public, KeyFormat.PEM, P.NONE), KeyFormat.RAW
        )
        == raw_public
    )
    assert (
        provider.export_key(provider.import_key(algorithm, pem_private, KeyFormat.PEM, P.NONE), KeyFormat.RAW)
        == raw_secret
    )
    oid, inner = der.decode_spki(spki)
    assert inner == raw_public and oid == provider.mechanisms[algorithm].oid


@pytest.mark.parametrize("algorithm", [*ML_DSA, "ML-KEM-768", "ML-KEM-1024"])
def test_spki_is_byte_identical_to_pyca(provider: OQSProvider, algorithm: str) -> None:
    key = provider.generate_key(algorithm, P.NONE)
    spki = provider.export_public_key(key)
    loaded = ser.load_der_public_key(spki)
    assert loaded.public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo) == spki
    assert loaded.public_bytes_raw() == provider.export_public_key(key, KeyFormat.RAW)  # type: ignore[union-attr]


def test_spki_oids(provider: OQSProvider) -> None:
    expected = {
        "ML-KEM-512": "2.16.840.1.101.3.4.4.1",
        "ML-DSA-87": "2.16.840.1.101.3.4.3.19",
        "SLH-DSA-SHA2-128s": "2.16.840.1.101.3.4.3.20",
        "SLH-DSA-SHAKE-256f": "2.16.840.1.101.3.4.3.31",
    }
    for algorithm, oid in expected.items():
        public = (
            os.urandom(SIZES[algorithm][0])
            if algorithm.startswith("SLH")
            else provider.export_public_key(provider.generate_key(algorithm, P.NONE), KeyFormat.RAW)
        )
        key = provider.import_key(algorithm, public, KeyFormat.RAW, P.NONE)
        assert der.decode_spki(provider.export_public_key(key))[0] == oid


@pytest.mark.parametrize(
    "cls,algorithm", [(mlkem.MLKEM768PrivateKey, "ML-KEM-768"), (mlkem.MLKEM1024PrivateKey, "ML-KEM-1024")]
)
def test_mlkem_seed_and_pkcs8_match_pyca(provider: OQSProvider, cls: type, algorithm: str) -> None:
    seed = os.urandom(64)
    reference = cls.from_seed_bytes(seed)  # type: ignore[attr-defined]
    key = provider.import_key(algorithm, seed, KeyFormat.SEED, P.NONE)
    assert provider.export_public_key(key, KeyFormat.RAW) == reference.public_key().public_bytes_raw()
    assert provider.export_key(key, KeyFormat.SEED) == seed
    pkcs8 = provider.export_key(key, KeyFormat.PKCS8_DER)
    assert pkcs8 == reference.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    # pyca's PKCS#8 imports, and a generated key (made from a fresh seed) exports pyca-readable
    from_pyca = provider.import_key(algorithm, pkcs8, KeyFormat.PKCS8_DER, P.NONE)
    assert provider.export_key(from_pyca, KeyFormat.RAW) == provider.export_key(key, KeyFormat.RAW)
    generated = provider.generate_key(algorithm, P.NONE)
    pyca_copy = ser.load_der_private_key(provider.export_key(generated, KeyFormat.PKCS8_DER), None)
    pyca_raw = pyca_copy.public_key().public_bytes_raw()  # type: ignore[union-attr]
    assert pyca_raw == provider.export_public_key(generated, KeyFormat.RAW)


def test_mlkem_pkcs8_expanded_and_both_forms(provider: OQSProvider) -> None:
    seeded = provider.generate_key("ML-KEM-768", P.NONE)
    seed = provider.export_key(seeded, KeyFormat.SEED)
    dk = provider.export_key(seeded, KeyFormat.RAW)
    oid = provider.mechanisms["ML-KEM-768"].oid
    assert oid is not None
    # expandedKey only: no seed to export afterwards; PKCS#8 is written in expanded form
    expanded = provider.import_key("ML-KEM-768", dk, KeyFormat.RAW, P.NONE)
    with pytest.raises(CryptoError) as exc:
        provider.export_key(expanded, KeyFormat.SEED)
    assert _code(exc) is ErrorCode.INVALID_ARGUMENT
    pkcs8 = provider.export_key(expanded, KeyFormat.PKCS8_DER)
    assert pkcs8 == der.encode_pkcs8(oid, der.tlv(der.OCTET_STRING, dk))
    # both: consistent is accepted (and keeps the seed), inconsistent is refused
    both = der.encode_pkcs8(
        oid, der.tlv(der.SEQUENCE, der.tlv(der.OCTET_STRING, seed) + der.tlv(der.OCTET_STRING, dk))
    )
    key = provider.import_key("ML-KEM-768", both, KeyFormat.PKCS8_DER, P.NONE)
    assert provider.export_key(key, KeyFormat.SEED) == seed
    wrong = der.encode_pkcs8(
        oid, der.tlv(der.SEQUENCE, der.tlv(der.OCTET_STRING, os.urandom(64)) + der.tlv(der.OCTET_STRING, dk))
    )
    with pytest.raises(CryptoError) as exc:
        provider.import_key("ML-KEM-768", wrong, KeyFormat.PKCS8_DER, P.NONE)
    assert _code(exc) is ErrorCode.INVALID_ARGUMENT and "do not match" in exc.value.message


def test_mlkem_decapsulation_key_checks(provider: OQSProvider) -> None:
    dk = bytearray(provider.export_key(provider.generate_key("ML-KEM-768", P.NONE), KeyFormat.RAW))
    bad_hash = bytearray(dk)
    bad_hash[768 * 3 + 40] ^= 1  # inside H(ek)
    bad_modulus = bytearray(dk)
    bad_modulus[384 * 3 : 384 * 3 + 3] = b"\xff\xff\xff"  # first ek coefficients = 4095
    for material, why in ((bad_hash, "hash check"), (bad_modulus, "modulus check")):
        with pytest.raises(CryptoError) as exc:
            provider.import_key("ML-KEM-768", bytes(material), KeyFormat.RAW, P.NONE)
        assert _code(exc) is ErrorCode.INVALID_ARGUMENT and why in exc.value.message
    ek = bytes(bad_modulus[384 * 3 : 768 * 3 + 32])
    with pytest.raises(CryptoError) as exc:
        provider.import_key("ML-KEM-768", ek, KeyFormat.RAW, P.NONE)
    assert "modulus" in exc.value.message


@pytest.mark.parametrize(
    "module,algorithm", [(ml_dsa_44, "ML-DSA-44"), (ml_dsa_65, "ML-DSA-65"), (ml_dsa_87, "ML-DSA-87")]
)
def test_mldsa_expanded_keys_from_another_implementation(
    provider: OQSProvider, module: object, algorithm: str
) -> None:
    # PQClean (through pqcrypto) writes the same FIPS 204 expanded secret key as liboqs: the
    # provider recomputes the public key from it and signs verifiably.
    public, secret = module.keygen()  # type: ignore[attr-defined]
    key = provider.import_key(algorithm, secret, KeyFormat.RAW, P.NONE)
    assert provider.export_public_key(key, KeyFormat.RAW) == public
    signer = provider.create_signer(algorithm, key, b"ctx")
    signer.update(b"message")
    module.verify(public, b"message", signer.finalize(), context=b"ctx")  # type: ignore[attr-defined]
    # the PKCS#8 expandedKey form carries the same bytes
    pkcs8 = provider.export_key(key, KeyFormat.PKCS8_DER)
    info = der.decode_pkcs8(pkcs8)
    assert info.private_key == der.tlv(der.OCTET_STRING, secret)


def test_mldsa_secret_key_consistency_is_checked(provider: OQSProvider) -> None:
    secret = bytearray(provider.export_key(provider.generate_key("ML-DSA-65", P.NONE), KeyFormat.RAW))
    for position, what in ((0, "rho"), (70, "tr"), (200, "s1"), (4000, "t0")):
        tampered = bytearray(secret)
        tampered[position] ^= 0x01
        with pytest.raises(CryptoError) as exc:
            provider.import_key("ML-DSA-65", bytes(tampered), KeyFormat.RAW, P.NONE)
        assert _code(exc) is ErrorCode.INVALID_ARGUMENT, what
        assert "not a valid ML-DSA-65 secret key" in exc.value.message


def test_mldsa_seed_import_is_unsupported_and_says_why(provider: OQSProvider) -> None:
    seed = os.urandom(32)
    assert KeyFormat.SEED not in provider.import_formats("ML-DSA-65")
    assert KeyFormat.SEED in provider.import_formats("ML-KEM-768")
    with pytest.raises(CryptoError) as exc:
        provider.import_key("ML-DSA-65", seed, KeyFormat.SEED, P.NONE)
    assert _code(exc) is ErrorCode.UNSUPPORTED_ALGORITHM and "seed" in exc.value.message
    # pyca's seed-only PKCS#8 leads to the same answer
    pkcs8 = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed).private_bytes(
        ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption()
    )
    with pytest.raises(CryptoError) as exc:
        provider.import_key("ML-DSA-65", pkcs8, KeyFormat.PKCS8_DER, P.NONE)
    assert _code(exc) is ErrorCode.UNSUPPORTED_ALGORITHM
    # a 'both' structure is checked against pyca's public key for the seed
    key = provider.generate_key("ML-DSA-65", P.NONE)
    oid = provider.mechanisms["ML-DSA-65"].oid
    assert oid is not None
    both = der.encode_pkcs8(
        oid,
        der.tlv(
            der.SEQUENCE,
            der.tlv(der.OCTET_STRING, seed)
            + der.tlv(der.OCTET_STRING, provider.export_key(key, KeyFormat.RAW)),
        ),
    )
    with pytest.raises(CryptoError) as exc:
        provider.import_key("ML-DSA-65", both, KeyFormat.PKCS8_DER, P.NONE)
    assert _code(exc) is ErrorCode.INVALID_ARGUMENT and "do not match" in exc.value.message
    with pytest.raises(CryptoError) as exc:
        provider.export_key(key, KeyFormat.SEED)
    assert _code(exc) is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize("algorithm", FALCON)
def test_falcon_secret_keys_are_checked(provider: OQSProvider, algorithm: str) -> None:
    secret = provider.export_key(provider.generate_key(algorithm, P.NONE), KeyFormat.RAW)
    wrong_header = b"\x00" + secret[1:]
    broken_f = bytearray(secret)
    broken_f[-5] ^= 0x40  # inside F: f and g still give a public key, signatures fail
    for material in (wrong_header, bytes(broken_f)):
        with pytest.raises(CryptoError) as exc:
            provider.import_key(algorithm, material, KeyFormat.RAW, P.NONE)
        assert _code(exc) is ErrorCode.INVALID_ARGUMENT
    public = bytearray(provider.export_public_key(provider.generate_key(algorithm, P.NONE), KeyFormat.RAW))
    public[1:3] = b"\xff\xfc"  # first coefficient 16383 >= q
    with pytest.raises(CryptoError) as exc:
        provider.import_key(algorithm, bytes(public), KeyFormat.RAW, P.NONE)
    assert "12289" in exc.value.message


# draft-ietf-lamps-x509-slhdsa example key (id-slh-dsa-sha2-128s.priv / .pub in the
# lamps-wg/x509-slhdsa repository)
LAMPS_SLH_SECRET = bytes.fromhex(
    "A2263BCA45860836523160049523D621677FAD90D51EB6067A327E0D1E64A501"
    "2B8109EC777CAA4E1F024CCFCF9497D99180509280F4256AF2B07AF80289B494"
)
LAMPS_SLH_PRIVATE_PEM = (
    b"-----BEGIN PRIVATE KEY-----\n"
    b"MFICAQAwCwYJYIZIAWUDBAMUBECiJjvKRYYINlIxYASVI9YhZ3+tkNUetgZ6Mn4N\n"
    b"HmSlASuBCex3fKpOHwJMz8+Ul9mRgFCSgPQlavKwevgCibSU\n"
    b"-----END PRIVATE KEY-----\n"
)
LAMPS_SLH_PUBLIC_PEM = (
    b"-----BEGIN PUBLIC KEY-----\n"
    b"MDAwCwYJYIZIAWUDBAMUAyEAK4EJ7Hd8qk4fAkzPz5SX2ZGAUJKA9CVq8rB6+AKJ\n"
    b"tJQ=\n"
    b"-----END PUBLIC KEY-----\n"
)


def test_slhdsa_encodings_match_the_lamps_example(provider: OQSProvider) -> None:
    key = provider.import_key("SLH-DSA-SHA2-128s", LAMPS_SLH_SECRET, KeyFormat.RAW, P.NONE)
    assert provider.export_key(key, KeyFormat.PEM) == LAMPS_SLH_PRIVATE_PEM
    assert provider.export_public_key(key, KeyFormat.PEM) == LAMPS_SLH_PUBLIC_PEM
    from_pem = provider.import_key("SLH-DSA-SHA2-128s", LAMPS_SLH_PRIVATE_PEM, KeyFormat.PEM, P.NONE)
    assert provider.export_key(from_pem, KeyFormat.RAW) == LAMPS_SLH_SECRET


def test_malformed_material_is_invalid_argument(provider: OQSProvider) -> None:
    key = provider.generate_key("ML-DSA-65", P.NONE)
    spki = provider.export_public_key(key)
    pkcs8 = provider.export_key(key, KeyFormat.PKCS8_DER)
    other_spki = provider.export_public_key(provider.generate_key("ML-DSA-44", P.NONE))
    cases: list[tuple[str, bytes, KeyFormat, str]] = [
        ("ML-DSA-65", b"\x00" * 100, KeyFormat.RAW, "1952 bytes"),
        ("ML-DSA-65", other_spki, KeyFormat.SPKI_DER, "ML-DSA-44"),
        ("ML-DSA-65", spki + b"\x00", KeyFormat.SPKI_DER, "trailing"),
        ("ML-DSA-65", spki[:-1], KeyFormat.SPKI_DER, "malformed"),
        ("ML-DSA-65", b"garbage", KeyFormat.PKCS8_DER, "malformed"),
        ("ML-DSA-65", pkcs8[:-10], KeyFormat.PKCS8_DER, "malformed"),
        (
            "ML-DSA-65",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            KeyFormat.PEM,
            "CERTIFICATE",
        ),
        ("ML-KEM-768", os.urandom(63), KeyFormat.SEED, "64 bytes"),
        ("Falcon-512", spki, KeyFormat.SPKI_DER, "OID"),
    ]
    for algorithm, material, fmt, needle in cases:
        with pytest.raises(CryptoError) as exc:
            provider.import_key(algorithm, material, fmt, P.NONE)
        assert _code(exc) is ErrorCode.INVALID_ARGUMENT, (algorithm, fmt, exc.value)
        assert needle in exc.value.message, (needle, exc.value.message)
    with pytest.raises(CryptoError) as exc:
        provider.import_key("SLH-DSA-SHA2-128f", os.urandom(48), KeyFormat.SEED, P.NONE)
    assert _code(exc) is ErrorCode.UNSUPPORTED_ALGORITHM
    with pytest.raises(CryptoError) as exc:
        provider.generate_key("AES-256", P.NONE)
    assert _code(exc) is ErrorCode.UNSUPPORTED_ALGORITHM


def test_pkcs8_v2_public_key_must_match(provider: OQSProvider) -> None:
    key = provider.generate_key("SLH-DSA-SHA2-128f", P.NONE)
    secret = provider.export_key(key, KeyFormat.RAW)
    oid = provider.mechanisms["SLH-DSA-SHA2-128f"].oid
    assert oid is not None

    def v2(public: bytes) -> bytes:
        return der.tlv(
            der.SEQUENCE,
            der.tlv(der.INTEGER, b"\x01")
            + der.algorithm_identifier(oid)
            + der.tlv(der.OCTET_STRING, secret)
            + der.tlv(der.CONTEXT_1_PRIMITIVE, b"\x00" + public),
        )

    good = provider.import_key("SLH-DSA-SHA2-128f", v2(secret[32:]), KeyFormat.PKCS8_DER, P.NONE)
    assert provider.export_key(good, KeyFormat.RAW) == secret
    with pytest.raises(CryptoError) as exc:
        provider.import_key("SLH-DSA-SHA2-128f", v2(os.urandom(32)), KeyFormat.PKCS8_DER, P.NONE)
    assert "does not belong" in exc.value.message


@pytest.mark.parametrize("algorithm", ["ML-KEM-768", "ML-DSA-65", "SLH-DSA-SHAKE-128f", "Falcon-1024"])
def test_persist_and_load(provider: OQSProvider, algorithm: str) -> None:
    key = provider.generate_key(algorithm, P.NONE)
    stored = provider.persist_key(key, "Slot")
    assert isinstance(stored, StoredKey) and stored.secret is True
    loaded = provider.load_stored_key(stored, algorithm, P.NONE)
    for fmt in (KeyFormat.RAW,):
        assert provider.export_key(loaded, fmt) == provider.export_key(key, fmt)
        assert provider.export_public_key(loaded, fmt) == provider.export_public_key(key, fmt)
    if algorithm.startswith("ML-KEM"):
        assert provider.export_key(loaded, KeyFormat.SEED) == provider.export_key(key, KeyFormat.SEED)
    with pytest.raises(CryptoError) as exc:
        provider.load_stored_key(stored, "ML-DSA-87", P.NONE)
    assert _code(exc) is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(CryptoError):
        provider.load_stored_key(StoredKey(b"\xff\x00junk", True), algorithm, P.NONE)
    public = provider.import_key(
        algorithm, provider.export_public_key(key, KeyFormat.RAW), KeyFormat.RAW, P.NONE
    )
    with pytest.raises(CryptoError):
        provider.persist_key(public, "Slot")


def test_shared_secret_export_and_persistence(provider: OQSProvider) -> None:
    key = provider.generate_key("ML-KEM-512", P.NONE)
    _, secret = provider.encapsulate("ML-KEM-512", key, P.DERIVE)
    assert isinstance(secret, SharedSecret) and secret.algorithm == "GENERIC-SECRET"
    raw = provider.export_key(secret, KeyFormat.RAW)
    assert len(raw) == 32
    stored = provider.persist_key(secret, "SecretSlot")
    loaded = provider.load_stored_key(stored, "GENERIC-SECRET", P.DERIVE)
    assert provider.export_key(loaded, KeyFormat.RAW) == raw
    with pytest.raises(CryptoError):
        provider.export_key(secret, KeyFormat.PKCS8_DER)


def test_pem_and_der_helpers_are_strict() -> None:
    body = der.tlv(der.SEQUENCE, der.tlv(der.INTEGER, b"\x00"))
    assert der.pem_decode(der.pem_encode("X", body)) == ("X", body)
    for bad in (
        b"\x30\x81\x05\x02\x01\x00\x00\x00",  # non-minimal length
        b"\x30\x80\x00\x00",  # indefinite length
        b"\x30\x05\x02\x01",
    ):  # runs past the end
        with pytest.raises(der.DerError):
            der.read_all(bad)
    assert der.decode_oid(der.encode_oid("2.16.840.1.101.3.4.3.18")) == "2.16.840.1.101.3.4.3.18"
