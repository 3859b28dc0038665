"""Hybrid post-quantum algorithms on the OpenSSL provider: X-Wing, X25519MLKEM768 and the
composite ML-DSA signatures.

* the published vectors (``cryptostack_core.testing.hybrid_vectors``) through the public API,
  all of them in process and a selection over a real daemon, plus slots that survive a
  restart;
* interop with pyca/cryptography used directly for each half, with the combiners and the
  composite message representative recomputed here from the specifications (hashlib, not
  ``cryptostack_core.hybrid``);
* negative cases: one half of a composite signature wrong, impossible signature lengths,
  truncated or oversized ciphertexts and keys, low-order X25519 halves, context strings,
  secrets that must stay in the daemon.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, mlkem, rsa, x25519
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding

import cryptostack_core as cs
from cryptostack_core.sdk import REGISTRY, CryptoError, ErrorCode, Operation
from cryptostack_core.sdk import KeyFormat as F
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_core.sdk.hybrid import COMPOSITE_SIGNATURES, HYBRID_KEMS, encode_pkcs8, encode_spki
from cryptostack_core.testing import hybrid_vectors as hv
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_openssl import OpenSSLProvider

PROVIDER_ID = 2
CONFIG = {"providers": [{"name": "openssl", "id": PROVIDER_ID, "options": {}}]}
XWING_LABEL = bytes.fromhex("5c2e2f2f5e5c")  # "\./" "/^\" (draft-connolly-cfrg-xwing-kem)
PREFIX = b"CompositeAlgorithmSignatures2025"  # draft-ietf-lamps-pq-composite-sigs-19
# A low-order point of Curve25519 (order 8, Wycheproof x25519 tcId 63's public key).
LOW_ORDER = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
# One composite per traditional scheme and curve family, for the slower per-key tests.
REPRESENTATIVE = [
    "ML-DSA-65-ECDSA-P256-SHA512",
    "ML-DSA-65-Ed25519-SHA512",
    "ML-DSA-44-ECDSA-P256-SHA256",
    "ML-DSA-87-ECDSA-P521-SHA512",
    "ML-DSA-87-Ed448-SHAKE256",
    "ML-DSA-65-ECDSA-brainpoolP256r1-SHA512",
    "ML-DSA-44-RSA2048-PSS-SHA256",
    "ML-DSA-44-RSA2048-PKCS15-SHA256",
]


@pytest.fixture(scope="module")
def stack() -> Iterator[cs.CryptoStack]:
    """An in-process service with the OpenSSL provider alone."""
    with cs.create_crypto_stack(
        cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(CONFIG)
    ) as connected:
        yield connected


def _key(
    km: cs.KeyManagementContext, algorithm: str, material: bytes, fmt: F, perms: P
) -> cs.CryptoResourceGuard:
    params = cs.ImportKeyParams().set_algorithm(algorithm).set_material(material, fmt)
    params.set_permissions(perms)
    return km.import_key(params)


def _secret(provider: OpenSSLProvider, key: object) -> bytes:
    return provider.export_key(key, F.RAW)  # type: ignore[arg-type]


# --- published vectors -----------------------------------------------------------------------


def test_every_published_vector_in_process(
    stack: cs.CryptoStack, record_property: Callable[[str, object], None]
) -> None:
    report = hv.run(stack, PROVIDER_ID)
    assert report.failures == []
    _, _, composites = hv.composite_vectors()
    expected = {
        "X-Wing": 3,
        "X25519MLKEM768": len(hv.x25519mlkem768_vectors()),
        **{v.algorithm: 1 for v in composites},
    }
    assert report.counts == expected
    assert set(expected) == set(HYBRID_KEMS) | set(COMPOSITE_SIGNATURES)  # every algorithm
    assert len(hv.x25519mlkem768_vectors()) == 71
    record_property("hybrid_vectors", report.counts)
    record_property("hybrid_checks", report.checks)


def test_published_vectors_over_a_daemon(tmp_path: Path) -> None:
    chosen = {
        "X-Wing",
        "X25519MLKEM768",
        "ML-DSA-65-ECDSA-P256-SHA512",
        "ML-DSA-65-Ed25519-SHA512",
        "ML-DSA-87-ECDSA-P384-SHA512",
    }
    with DaemonProcess(tmp_path, CONFIG) as daemon, daemon.stack(timeout=30) as stack:
        report = hv.run(stack, PROVIDER_ID, chosen.__contains__)
    assert report.failures == []
    assert set(report.counts) == chosen and report.counts["X25519MLKEM768"] == 71


def test_hybrid_slots_survive_a_restart(tmp_path: Path) -> None:
    config = {
        **CONFIG,
        "key_slots": [
            {
                "name": "Kem",
                "algorithm": "X-Wing",
                "provider": PROVIDER_ID,
                "permissions": ["encapsulate", "decapsulate"],
                "provision": "generate",
            },
            {
                "name": "Tls",
                "algorithm": "X25519MLKEM768",
                "provider": PROVIDER_ID,
                "permissions": ["encapsulate", "decapsulate"],
            },
            {
                "name": "Sig",
                "algorithm": "ML-DSA-65-ECDSA-P256-SHA512",
                "provider": PROVIDER_ID,
                "permissions": ["sign", "verify"],
                "provision": "generate",
            },
        ],
    }
    derived = P.DERIVE | P.EXPORT
    message = b"signed before the restart"
    with DaemonProcess(tmp_path, config) as daemon:
        with daemon.stack() as stack, stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            kem_slot = ctx.resolve_resource("Kem", cs.ResourceType.KEY_SLOT)
            sig_slot = ctx.resolve_resource("Sig", cs.ResourceType.KEY_SLOT)
            tls = km.generate_key(
                cs.GenerateKeyParams()
                .set_algorithm("X25519MLKEM768")
                .set_permissions(P.ENCAPSULATE | P.DECAPSULATE)
            )
            km.persist_key(ctx.resolve_resource("Tls", cs.ResourceType.KEY_SLOT), tls)
            shares = {}
            for name, key in [("X-Wing", kem_slot), ("X25519MLKEM768", tls)]:
                with ctx.create_kem_context(
                    cs.KemContextConfig()
                    .set_algorithm(name)
                    .set_key(key)
                    .set_derived_key_permissions(derived)
                ) as kem:
                    ciphertext, guard = kem.encapsulate()
                    shares[name] = (
                        ciphertext,
                        km.export_key(guard, F.RAW),
                        km.export_public_key(key, F.RAW),
                    )
            with ctx.create_sign_context(
                cs.SignContextConfig()
                .set_algorithm("ML-DSA-65-ECDSA-P256")
                .set_key(sig_slot)
                .set_context(b"app")
            ) as signer:
                assert signer.get_signature_size() == 3381
                signature = signer.sign(message)
            public = km.export_public_key(sig_slot)
        daemon.stop()
        daemon.start()
        with daemon.stack() as stack, stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            for name, slot in [("X-Wing", "Kem"), ("X25519MLKEM768", "Tls")]:
                key = ctx.resolve_resource(slot, cs.ResourceType.KEY_SLOT)
                ciphertext, secret, ek = shares[name]
                assert km.export_public_key(key, F.RAW) == ek
                with ctx.create_kem_context(
                    cs.KemContextConfig()
                    .set_algorithm(name)
                    .set_key(key)
                    .set_derived_key_permissions(derived)
                ) as kem:
                    assert km.export_key(kem.decapsulate(ciphertext), F.RAW) == secret
            sig_slot = ctx.resolve_resource("Sig", cs.ResourceType.KEY_SLOT)
            assert km.export_public_key(sig_slot) == public
            with ctx.create_verify_context(
                cs.VerifyContextConfig()
                .set_algorithm("ML-DSA-65-ECDSA-P256-SHA512")
                .set_key(sig_slot)
                .set_context(b"app")
            ) as verifier:
                assert verifier.verify(message, signature)
                assert not verifier.verify(message + b"!", signature)


# --- interop with pyca for each half -----------------------------------------------------------


def _xwing_halves(sk: bytes) -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
    expanded = hashlib.shake_256(sk).digest(96)
    return (
        mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
        x25519.X25519PrivateKey.from_private_bytes(expanded[64:]),
    )


def _combine(algorithm: str, ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    if algorithm == "X-Wing":
        return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()
    return ss_m + ss_x


@pytest.mark.parametrize("algorithm", ["X-Wing", "X25519MLKEM768"])
def test_kem_interop_with_pyca_halves(provider: OpenSSLProvider, algorithm: str) -> None:
    pair = provider.generate_key(algorithm, P.DECAPSULATE)
    sk = provider.export_key(pair, F.SEED)
    if algorithm == "X-Wing":
        assert len(sk) == 32
        m_priv, x_priv = _xwing_halves(sk)
    else:
        assert len(sk) == 96
        m_priv = mlkem.MLKEM768PrivateKey.from_seed_bytes(sk[:64])
        x_priv = x25519.X25519PrivateKey.from_private_bytes(sk[64:])
    pk_x = x_priv.public_key().public_bytes_raw()
    public = provider.export_public_key(pair, F.RAW)
    assert public == m_priv.public_key().public_bytes_raw() + pk_x  # ML-KEM first
    # the provider encapsulates; pyca's halves decapsulate
    encapsulation_key = provider.import_key(algorithm, public, F.RAW, P.ENCAPSULATE)
    ciphertext, key = provider.encapsulate(algorithm, encapsulation_key, P.DERIVE)
    assert len(ciphertext) == 1120
    ct_x = ciphertext[1088:]
    ss_x = x_priv.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
    expected = _combine(algorithm, m_priv.decapsulate(ciphertext[:1088]), ss_x, ct_x, pk_x)
    assert _secret(provider, key) == expected
    assert len(expected) == REGISTRY.get(algorithm).shared_secret_size
    # pyca's halves encapsulate; the provider decapsulates
    ss_m, ct_m = m_priv.public_key().encapsulate()
    ephemeral = x25519.X25519PrivateKey.generate()
    ct_x = ephemeral.public_key().public_bytes_raw()
    expected = _combine(algorithm, ss_m, ephemeral.exchange(x_priv.public_key()), ct_x, pk_x)
    assert (
        _secret(provider, provider.decapsulate(algorithm, pair, ct_m + ct_x, P.DERIVE)) == expected
    )


def _ph(name: str, message: bytes) -> bytes:
    prehash = COMPOSITE_SIGNATURES[name].prehash_name
    if prehash == "SHAKE256-64":
        return hashlib.shake_256(message).digest(64)
    return hashlib.new(prehash.replace("-", "").lower(), message).digest()


def _m_prime(name: str, message: bytes, context: bytes) -> bytes:
    label = COMPOSITE_SIGNATURES[name].identifier.replace("id-", "COMPSIG-")
    label = label.replace("brainpoolP256r1", "BP256").replace("brainpoolP384r1", "BP384")
    return PREFIX + label.encode() + bytes([len(context)]) + context + _ph(name, message)


_MLDSA_PUBLIC: dict[str, tuple[Any, int, int]] = {
    "ML-DSA-44": (mldsa.MLDSA44PublicKey, 1312, 2420),
    "ML-DSA-65": (mldsa.MLDSA65PublicKey, 1952, 3309),
    "ML-DSA-87": (mldsa.MLDSA87PublicKey, 2592, 4627),
}


def _verify_trad(name: str, public_bytes: bytes, signature: bytes, message: bytes) -> None:
    trad = COMPOSITE_SIGNATURES[name].traditional
    digest = {
        "SHA-256": hashes.SHA256(),
        "SHA-384": hashes.SHA384(),
        "SHA-512": hashes.SHA512(),
    }.get(trad.hash_name)
    if trad.scheme == "EdDSA":
        cls = ed25519.Ed25519PublicKey if trad.curve == "Ed25519" else ed448.Ed448PublicKey
        cls.from_public_bytes(public_bytes).verify(signature, message)
    elif trad.scheme == "ECDSA":
        assert digest is not None and trad.ec_curve is not None
        key = ec.EllipticCurvePublicKey.from_encoded_point(trad.ec_curve, public_bytes)
        key.verify(signature, message, ec.ECDSA(digest))
    else:
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        rsa_key = load_der_public_key(public_bytes)
        assert isinstance(rsa_key, rsa.RSAPublicKey) and digest is not None
        padding: asym_padding.AsymmetricPadding = asym_padding.PKCS1v15()
        if trad.scheme == "RSA-PSS":
            padding = asym_padding.PSS(asym_padding.MGF1(digest), trad.pss_salt)
        rsa_key.verify(signature, message, padding, digest)


def _sign(
    provider: OpenSSLProvider, name: str, key: object, message: bytes, context: bytes = b""
) -> bytes:
    signer = provider.create_signer(name, key, context)  # type: ignore[arg-type]
    signer.update(message[:5])
    signer.update(memoryview(message)[5:])
    return signer.finalize()


def _verify(
    provider: OpenSSLProvider,
    name: str,
    key: object,
    message: bytes,
    signature: bytes,
    context: bytes = b"",
) -> bool:
    verifier = provider.create_verifier(name, key, context)  # type: ignore[arg-type]
    verifier.update(message)
    return verifier.finalize(signature)


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_composite_halves_verify_with_pyca(provider: OpenSSLProvider, name: str) -> None:
    spec = COMPOSITE_SIGNATURES[name]
    public_cls, pk_size, sig_size = _MLDSA_PUBLIC[spec.mldsa]
    pair = provider.generate_key(name, P.SIGN)
    message, context = os.urandom(100), b"application context"
    signature = _sign(provider, name, pair, message, context)
    assert len(signature) <= REGISTRY.get(name).signature_size
    public = provider.export_public_key(pair, F.RAW)
    m_prime = _m_prime(name, message, context)
    # ML-DSA half: pure ML-DSA over M' with the label as its context string
    public_cls.from_public_bytes(public[:pk_size]).verify(signature[:sig_size], m_prime, spec.label)
    _verify_trad(name, public[pk_size:], signature[sig_size:], m_prime)  # raises if wrong
    # a composite assembled here from pyca-made halves verifies in the provider
    private = provider.export_key(pair, F.RAW)
    private_classes: dict[str, Any] = {
        "ML-DSA-44": mldsa.MLDSA44PrivateKey,
        "ML-DSA-65": mldsa.MLDSA65PrivateKey,
        "ML-DSA-87": mldsa.MLDSA87PrivateKey,
    }
    mldsa_private = private_classes[spec.mldsa].from_seed_bytes(private[:32])
    assembled = mldsa_private.sign(m_prime, spec.label) + signature[sig_size:]
    assert _verify(provider, name, pair, message, assembled, context)
    assert not _verify(provider, name, pair, message, assembled)  # other context


# --- negative cases ----------------------------------------------------------------------------


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize("name", REPRESENTATIVE[:5])
def test_one_half_wrong_fails_the_whole_signature(provider: OpenSSLProvider, name: str) -> None:
    spec = COMPOSITE_SIGNATURES[name]
    cut = spec.mldsa_signature_size
    pair = provider.generate_key(name, P.SIGN)
    other = provider.generate_key(name, P.SIGN)
    message = b"one message"
    good = _sign(provider, name, pair, message)
    assert _verify(provider, name, pair, message, good)
    elsewhere = _sign(provider, name, pair, b"another message")
    foreign = _sign(provider, name, other, message)
    bad = {
        "ML-DSA half flipped": _flip(good, 100),
        "traditional half flipped": _flip(good, len(good) - 3),
        "ML-DSA half of another message": elsewhere[:cut] + good[cut:],
        "traditional half of another message": good[:cut] + elsewhere[cut:],
        "ML-DSA half of another key": foreign[:cut] + good[cut:],
        "traditional half of another key": good[:cut] + foreign[cut:],
        "truncated by one byte": good[:-1],
        "ML-DSA half alone": good[:cut],
        "one byte too many": good + b"\x00",
        "far too long": good + bytes(200),
        "empty": b"",
    }
    for what, signature in bad.items():
        assert not _verify(provider, name, pair, message, signature), what
    assert not _verify(provider, name, pair, message, good, b"ctx")


def test_negative_cases_through_the_api(stack: cs.CryptoStack) -> None:
    with stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        pair = km.generate_key(cs.GenerateKeyParams().set_algorithm("ML-DSA-65-Ed25519"))
        config = cs.SignContextConfig().set_algorithm("ML-DSA-65-Ed25519-SHA512").set_key(pair)
        signature = ctx.create_sign_context(config).sign(b"m")
        verifier = ctx.create_verify_context(
            cs.VerifyContextConfig().set_algorithm("ML-DSA-65-Ed25519-SHA512").set_key(pair)
        )
        assert verifier.verify(b"m", signature)
        for wrong in (
            _flip(signature, 0),
            _flip(signature, 3330),
            signature[:-1],
            signature + b"\x00",
        ):
            assert verifier.verify(b"m", wrong) is False
        with pytest.raises(CryptoError) as exc:  # context strings are at most 255 bytes
            ctx.create_sign_context(
                cs.SignContextConfig()
                .set_algorithm("ML-DSA-65-Ed25519-SHA512")
                .set_key(pair)
                .set_context(bytes(256))
            )
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT
        with pytest.raises(CryptoError) as exc:  # a key of another composite algorithm
            ctx.create_sign_context(
                cs.SignContextConfig().set_algorithm("ML-DSA-44-Ed25519-SHA512").set_key(pair)
            )
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize("algorithm", ["X-Wing", "X25519MLKEM768"])
def test_kem_wrong_ciphertext_lengths_are_invalid_arguments(
    stack: cs.CryptoStack, algorithm: str
) -> None:
    with stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        pair = km.generate_key(cs.GenerateKeyParams().set_algorithm(algorithm))
        kem = ctx.create_kem_context(cs.KemContextConfig().set_algorithm(algorithm).set_key(pair))
        ciphertext, secret = kem.encapsulate()
        assert secret.permitted_operations == P.DERIVE
        for length in (0, 32, 1088, 1119, 1121, 2240):
            with pytest.raises(CryptoError) as exc:
                kem.decapsulate((ciphertext * 2)[:length])
            assert exc.value.code is ErrorCode.INVALID_ARGUMENT, length
        # the shared secret stays in the daemon: no EXPORT unless asked for, DERIVE works
        with pytest.raises(CryptoError) as exc:
            km.export_key(kem.decapsulate(ciphertext), F.RAW)
        assert exc.value.code is ErrorCode.KEY_OPERATION_NOT_PERMITTED
        derived = km.derive_key(
            cs.DeriveKeyParams().set_algorithm("HKDF-SHA-256").set_key(secret).set_output("AES-256")
        )
        assert derived.permitted_operations != P.NONE
        # a public key alone cannot decapsulate
        public = _key(km, algorithm, km.export_public_key(pair, F.RAW), F.RAW, P.ENCAPSULATE)
        with ctx.create_kem_context(
            cs.KemContextConfig().set_algorithm(algorithm).set_key(public)
        ) as sender:
            sender.encapsulate()
            with pytest.raises(CryptoError) as exc:
                sender.decapsulate(ciphertext)
            assert exc.value.code is ErrorCode.KEY_OPERATION_NOT_PERMITTED


def _invalid(provider: OpenSSLProvider, algorithm: str, material: bytes, fmt: F) -> str:
    with pytest.raises(CryptoError) as exc:
        provider.import_key(algorithm, material, fmt, P.NONE)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT, (algorithm, fmt, exc.value)
    return exc.value.message


def test_kem_key_encodings_and_refusals(provider: OpenSSLProvider) -> None:
    xwing = provider.generate_key("X-Wing", P.DECAPSULATE)
    tls = provider.generate_key("X25519MLKEM768", P.DECAPSULATE)
    for pair, name in [(xwing, "X-Wing"), (tls, "X25519MLKEM768")]:
        public = provider.export_public_key(pair, F.RAW)
        private = provider.export_key(pair, F.SEED)
        assert provider.export_key(pair, F.RAW) == private
        for length in (0, len(private) - 1, len(private) + 1, len(public) - 1, len(public) + 1):
            _invalid(provider, name, (private + public)[:length], F.RAW)
        for length in (len(private) - 1, len(private) + 1, len(public)):
            _invalid(provider, name, (private + public)[:length], F.SEED)
        bad_mlkem = b"\xff" * 1184 + public[1184:]  # fails the FIPS 203 modulus check
        assert "ML-KEM" in _invalid(provider, name, bad_mlkem, F.RAW)
        assert "low-order" in _invalid(provider, name, public[:1184] + LOW_ORDER, F.RAW)
    # X-Wing's OID-based encodings round-trip; other OIDs and mismatched publicKey fail
    spki = provider.export_public_key(xwing, F.SPKI_DER)
    assert spki == encode_spki("1.3.6.1.4.1.62253.25722", provider.export_public_key(xwing, F.RAW))
    again = provider.import_key("X-Wing", spki, F.SPKI_DER, P.ENCAPSULATE)
    assert not again.has_private
    pkcs8 = provider.export_key(xwing, F.PKCS8_DER)
    assert provider.export_key(
        provider.import_key("X-Wing", pkcs8, F.PKCS8_DER, P.NONE), F.SEED
    ) == provider.export_key(xwing, F.SEED)
    _invalid(provider, "X-Wing", encode_spki("1.3.6.1.5.5.7.6.45", bytes(1216)), F.SPKI_DER)
    _invalid(provider, "X-Wing", pkcs8[:-1], F.PKCS8_DER)
    _invalid(provider, "X-Wing", spki + b"\x00", F.SPKI_DER)
    # X25519MLKEM768 has no OID: no SPKI/PKCS#8 either way
    _invalid(provider, "X25519MLKEM768", spki, F.SPKI_DER)
    exports: list[Callable[[], bytes]] = [
        lambda: provider.export_public_key(tls, F.SPKI_DER),
        lambda: provider.export_key(tls, F.PKCS8_DER),
    ]
    for export in exports:
        with pytest.raises(CryptoError) as exc:
            export()
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_low_order_x25519_halves(provider: OpenSSLProvider) -> None:
    xwing = provider.generate_key("X-Wing", P.DECAPSULATE)
    ciphertext = os.urandom(1088) + LOW_ORDER
    # X-Wing defines no check: the secret is the combiner over an all-zero X25519 share
    m_priv, _ = _xwing_halves(provider.export_key(xwing, F.SEED))
    pk_x = provider.export_public_key(xwing, F.RAW)[1184:]
    expected = _combine("X-Wing", m_priv.decapsulate(ciphertext[:1088]), bytes(32), LOW_ORDER, pk_x)
    assert (
        _secret(provider, provider.decapsulate("X-Wing", xwing, ciphertext, P.DERIVE)) == expected
    )
    # the TLS group refuses it (draft-ietf-tls-ecdhe-mlkem, RFC 8446 7.4.2)
    tls = provider.generate_key("X25519MLKEM768", P.DECAPSULATE)
    with pytest.raises(CryptoError) as exc:
        provider.decapsulate("X25519MLKEM768", tls, ciphertext, P.DERIVE)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT and "low-order" in exc.value.message


def test_composite_key_encodings_and_refusals(provider: OpenSSLProvider) -> None:
    name = "ML-DSA-65-ECDSA-P256-SHA512"
    pair = provider.generate_key(name, P.SIGN)
    public = provider.export_public_key(pair, F.RAW)
    private = provider.export_key(pair, F.RAW)
    assert len(public) == 2017 and private[32:33] == b"\x30"  # ECPrivateKey DER follows
    for length in (1952, 2016, 2018):
        _invalid(provider, name, (public + b"\x00")[:length], F.RAW)
    _invalid(provider, name, private[:32], F.RAW)
    _invalid(provider, name, private[:-1], F.RAW)
    _invalid(provider, name, private[:32], F.SEED)
    # the traditional half must be the named curve, as the uncompressed point
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    from cryptography.hazmat.primitives import serialization as ser

    point = p384.public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
    _invalid(provider, name, public[:1952] + point, F.RAW)
    compressed = pair.traditional_public.public_bytes(  # type: ignore[attr-defined]
        ser.Encoding.X962, ser.PublicFormat.CompressedPoint
    )
    _invalid(provider, name, public[:1952] + compressed, F.RAW)
    other = COMPOSITE_SIGNATURES["ML-DSA-65-ECDSA-P384-SHA512"]
    p384_private = ec.generate_private_key(ec.SECP384R1())
    _invalid(provider, name, private[:32] + other.traditional.encode_private(p384_private), F.RAW)
    # SPKI / PKCS#8 carry the algorithm's OID; another composite's OID is refused
    spki = provider.export_public_key(pair, F.SPKI_DER)
    assert spki == encode_spki("1.3.6.1.5.5.7.6.45", public)
    assert not provider.import_key(name, spki, F.SPKI_DER, P.VERIFY).has_private
    _invalid(provider, "ML-DSA-65-ECDSA-P384-SHA512", spki, F.SPKI_DER)
    pem = provider.export_key(pair, F.PEM)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert provider.export_key(provider.import_key(name, pem, F.PEM, P.SIGN), F.RAW) == private
    assert (
        provider.import_key(
            name, provider.export_public_key(pair, F.PEM), F.PEM, P.VERIFY
        ).public_bytes
        == public
    )  # type: ignore[attr-defined]
    _invalid(provider, name, encode_pkcs8("1.3.6.1.5.5.7.6.46", private), F.PKCS8_DER)
    with pytest.raises(CryptoError) as exc:
        provider.export_key(pair, F.SEED)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    public_only = provider.import_key(name, public, F.RAW, P.VERIFY)
    with pytest.raises(CryptoError) as exc:
        provider.create_signer(name, public_only, b"")
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_capabilities_and_scheduling(provider: OpenSSLProvider) -> None:
    for name in HYBRID_KEMS:
        for op in (
            Operation.ENCAPSULATE,
            Operation.DECAPSULATE,
            Operation.GENERATE_KEY,
            Operation.IMPORT_KEY,
        ):
            assert provider.supports(name, op)
        # ML-KEM plus X25519 work (50-70 us) goes to a worker thread
        assert not provider.run_inline(Operation.ENCAPSULATE, 0, name)
        assert not provider.run_inline(Operation.DECAPSULATE, 1120, name)
    assert provider.run_inline(Operation.DECAPSULATE, 1088, "ML-KEM-768")
    for name, spec in COMPOSITE_SIGNATURES.items():
        assert provider.supports(name, Operation.SIGN) and provider.supports(name, Operation.VERIFY)
        registered = REGISTRY.get(name)
        assert registered.signature_size == spec.max_signature_size
        assert registered.public_key_size == spec.public_key_size
        assert registered.supports_context_string
        assert provider.run_inline(Operation.SIGN, 64, name)  # an update only hashes
        assert not provider.run_inline(Operation.SIGN, 0, name)  # finalisation signs twice
