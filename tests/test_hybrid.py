"""The provider-independent hybrid pieces (``cryptostack_core.hybrid``) against the published
data, with pyca/cryptography doing the component operations: X-Wing's seed expansion and
combiner, the composite message representative and encodings, strict SPKI/PKCS#8 parsing,
and the registry entries. No provider plugin is needed."""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from cryptostack_core.sdk import REGISTRY, AlgorithmKind, CryptoError, ErrorCode, KeyClass, hybrid
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_core.testing import hybrid_vectors as hv


def _invalid(call: object, *args: object) -> str:
    with pytest.raises(CryptoError) as exc:
        call(*args)  # type: ignore[operator]
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    return exc.value.message


def test_xwing_vectors_with_pyca_halves() -> None:
    spec = hybrid.XWING
    assert hybrid.XWING_LABEL.hex() == "5c2e2f2f5e5c"
    for v in hv.xwing_vectors():
        mlkem_seed, scalar = spec.expand_private_key(v.sk)
        m_priv = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed)
        x_priv = x25519.X25519PrivateKey.from_private_bytes(scalar)
        pk_m, pk_x = spec.split_public_key(v.pk)
        assert m_priv.public_key().public_bytes_raw() == pk_m
        assert x_priv.public_key().public_bytes_raw() == pk_x
        ct_m, ct_x = spec.split_ciphertext(v.ct)
        # the published ciphertext's X25519 half is X25519(eseed[32:64], 9)
        ephemeral = x25519.X25519PrivateKey.from_private_bytes(v.eseed[32:])
        assert ephemeral.public_key().public_bytes_raw() == ct_x
        ss_x = x_priv.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
        assert spec.combine(m_priv.decapsulate(ct_m), ss_x, ct_x, pk_x) == v.ss
        assert spec.join_ciphertext(ct_m, ct_x) == v.ct
        assert spec.join_public_key(pk_m, pk_x) == v.pk


def test_hybrid_kem_length_checks() -> None:
    for spec in (hybrid.XWING, hybrid.X25519MLKEM768):
        assert (spec.public_key_size, spec.ciphertext_size) == (1216, 1120)
        for n in (0, 1119, 1121):
            _invalid(spec.split_ciphertext, bytes(n))
        for n in (1215, 1217):
            _invalid(spec.split_public_key, bytes(n))
        _invalid(spec.expand_private_key, bytes(spec.private_key_size + 1))
        _invalid(spec.join_ciphertext, bytes(1087), bytes(33))
        _invalid(spec.combine, bytes(32), bytes(31), bytes(32), bytes(32))
    key = bytes(range(96))
    assert hybrid.X25519MLKEM768.expand_private_key(key) == (key[:64], key[64:])
    assert hybrid.X25519MLKEM768.combine(b"m" * 32, b"x" * 32, bytes(32), bytes(32)) == b"m" * 32 + b"x" * 32
    assert hybrid.hybrid_kem_by_oid("1.3.6.1.4.1.62253.25722") is hybrid.XWING
    assert hybrid.hybrid_kem_by_oid("1.2.3") is None


def _sample(name: str) -> dict[str, bytes]:
    """The draft's message-representative example, fields joined across wrapped lines."""
    text = (hv.VECTORS / f"composite-message-representative-{name}.md").read_text()
    fields: dict[str, bytes] = {}
    for key, pattern in [
        ("M", r"^M: ([0-9a-f]+)"),
        ("ctx", r"^ctx: ([0-9a-f]+|<empty>)"),
        ("PH", r"^PH\(M\): ([0-9a-f\n]+?)\n\n"),
        ("M'", r"^M': ([0-9a-f\n]+)"),
    ]:
        match = re.search(pattern, text, re.M | re.S)
        assert match, key
        value = match.group(1).replace("\n", "")
        fields[key] = b"" if value == "<empty>" else bytes.fromhex(value)
    return fields


@pytest.mark.parametrize("sample", ["ctx", "noctx"])
def test_message_representative_matches_the_draft(sample: str) -> None:
    fields = _sample(sample)
    spec = hybrid.COMPOSITE_SIGNATURES["ML-DSA-65-ECDSA-P256-SHA512"]
    ph = spec.prehash()
    ph.update(fields["M"])
    digest = ph.finalize()
    assert digest == fields["PH"]
    assert spec.message_representative(fields["ctx"], digest) == fields["M'"]
    _invalid(spec.message_representative, bytes(256), digest)
    _invalid(spec.message_representative, b"", digest[:-1])


def test_composite_table_and_registry_agree() -> None:
    assert len(hybrid.COMPOSITE_SIGNATURES) == 18
    oids = {spec.oid for spec in hybrid.COMPOSITE_SIGNATURES.values()}
    assert oids == {f"1.3.6.1.5.5.7.6.{arc}" for arc in range(37, 55)}
    for name, spec in hybrid.COMPOSITE_SIGNATURES.items():
        entry = REGISTRY.get(name)
        assert entry.kind is AlgorithmKind.SIGNATURE and entry.key_class is KeyClass.ASYMMETRIC
        assert entry.key_algorithms == (name,)
        assert entry.default_permissions == P.SIGN | P.VERIFY
        assert entry.signature_size == spec.max_signature_size
        assert entry.public_key_size == spec.public_key_size
        assert REGISTRY.canonical(spec.identifier) == name
        assert hybrid.composite_by_oid(spec.oid) is spec
        assert spec.label.startswith(b"COMPSIG-MLDSA")
    for name, kem in hybrid.HYBRID_KEMS.items():
        entry = REGISTRY.get(name)
        assert entry.kind is AlgorithmKind.KEM
        assert (entry.public_key_size, entry.ciphertext_size, entry.shared_secret_size) == (
            kem.public_key_size,
            kem.ciphertext_size,
            kem.shared_secret_size,
        )
    assert REGISTRY.canonical("ML-DSA-65-ECDSA-P256") == "ML-DSA-65-ECDSA-P256-SHA512"
    assert REGISTRY.canonical("xwing") == "X-Wing"


def test_composite_encodings_round_trip_the_published_keys() -> None:
    message, _, vectors = hv.composite_vectors()
    assert message == b"The quick brown fox jumps over the lazy dog."
    for v in vectors:
        spec = hybrid.COMPOSITE_SIGNATURES[v.algorithm]
        seed, trad_private = spec.split_private_key(v.sk)
        assert len(seed) == 32
        private = spec.traditional.decode_private(trad_private)
        assert spec.traditional.encode_private(private) == trad_private, v.algorithm
        mldsa_public, trad_public = spec.split_public_key(v.pk)
        public = spec.traditional.decode_public(trad_public)
        assert spec.traditional.encode_public(public) == trad_public
        assert spec.traditional.encode_public(private.public_key()) == trad_public
        assert spec.join_public_key(mldsa_public, trad_public) == v.pk
        assert spec.join_private_key(seed, trad_private) == v.sk
        assert hybrid.decode_pkcs8(v.sk_pkcs8) == (spec.oid, v.sk, None)
        assert hybrid.encode_pkcs8(spec.oid, v.sk) == v.sk_pkcs8
        for signature in (v.s, v.s_with_context):
            halves = spec.split_signature(signature)
            assert halves is not None and spec.join_signature(*halves) == signature
        assert spec.split_signature(v.s[: spec.mldsa_signature_size]) is None
        assert spec.split_signature(v.s + bytes(200)) is None


def test_traditional_encodings_refuse_other_keys() -> None:
    p256 = hybrid.COMPOSITE_SIGNATURES["ML-DSA-65-ECDSA-P256-SHA512"].traditional
    p384 = hybrid.COMPOSITE_SIGNATURES["ML-DSA-65-ECDSA-P384-SHA512"].traditional
    ed = hybrid.COMPOSITE_SIGNATURES["ML-DSA-65-Ed25519-SHA512"].traditional
    rsa2048 = hybrid.COMPOSITE_SIGNATURES["ML-DSA-44-RSA2048-PSS-SHA256"].traditional
    key = p384.generate()
    _invalid(p256.encode_private, key)
    _invalid(p256.decode_private, p384.encode_private(key))
    _invalid(p256.decode_public, p384.encode_public(key.public_key()))
    _invalid(ed.decode_public, bytes(31))
    _invalid(ed.decode_private, bytes(33))
    _invalid(rsa2048.decode_public, b"\x04" + bytes(64))
    _invalid(p256.decode_private, b"\x30\x03\x02\x01\x01")
    # RSA halves are PKCS#1, not SubjectPublicKeyInfo / PKCS#8 around it
    rsa_key = rsa2048.generate()
    assert (
        rsa2048.decode_public(rsa2048.encode_public(rsa_key.public_key())).public_numbers()
        == rsa_key.public_key().public_numbers()
    )
    spki = rsa_key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    assert "composite encoding" in _invalid(rsa2048.decode_public, spki)
    pkcs8 = rsa_key.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    assert "PKCS#1" in _invalid(rsa2048.decode_private, pkcs8)
    # the ECDSA half is the uncompressed point, and ECPrivateKey's publicKey must match
    point = key.public_key().public_bytes(ser.Encoding.X962, ser.PublicFormat.CompressedPoint)
    _invalid(p384.decode_public, point)
    with_public = key.private_bytes(
        ser.Encoding.DER, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption()
    )
    assert p384.encode_public(p384.decode_private(with_public).public_key()) == p384.encode_public(
        key.public_key()
    )
    other = p384.generate().private_bytes(
        ser.Encoding.DER, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption()
    )
    tail = 2 + 2 + 1 + 97  # [1] { BIT STRING { 0x00, the 97-byte point } } ends both
    assert with_public[-tail] == other[-tail] == 0xA1
    mixed = with_public[:-tail] + other[-tail:]
    assert "does not match" in _invalid(p384.decode_private, mixed)
    assert (p256.max_signature_size, p384.max_signature_size, ed.max_signature_size) == (72, 104, 64)


def test_spki_pkcs8_and_pem_are_strict() -> None:
    label, der = hybrid.pem_decode((hv.VECTORS / "xwing-example.priv.pem").read_bytes())
    assert label == "PRIVATE KEY"
    assert hybrid.decode_pkcs8(der) == ("1.3.6.1.4.1.62253.25722", bytes(range(32)), None)
    assert hybrid.encode_pkcs8("1.3.6.1.4.1.62253.25722", bytes(range(32))) == der
    assert hybrid.pem_encode(label, der) == (hv.VECTORS / "xwing-example.priv.pem").read_bytes()
    label, der = hybrid.pem_decode((hv.VECTORS / "xwing-example.pub.pem").read_bytes())
    oid, public = hybrid.decode_spki(der)
    assert (label, oid, len(public)) == ("PUBLIC KEY", "1.3.6.1.4.1.62253.25722", 1216)
    assert hybrid.encode_spki(oid, public) == der
    good = hybrid.encode_spki("1.3.6.1.5.5.7.6.45", bytes(2017))
    assert hybrid.decode_spki(good) == ("1.3.6.1.5.5.7.6.45", bytes(2017))
    algorithm_with_null = bytes.fromhex("300f060b2b0601040183e62d81c87a0500")
    with_parameters = b"\x30\x16" + algorithm_with_null + b"\x03\x03\x00\x01\x02"
    assert "parameters must be absent" in _invalid(hybrid.decode_spki, with_parameters)
    for bad in [
        good + b"\x00",
        good[:-1],
        b"",
        b"\x30\x80\x00\x00",
        bytes([0x30, 0x81, 0x03]) + good[2:5],  # non-minimal length
        good.replace(b"\x03\x82\x07\xe2\x00", b"\x03\x82\x07\xe2\x01"),  # unused bits
        bytes(70 * 1024),
    ]:
        _invalid(hybrid.decode_spki, bad)
    pkcs8 = hybrid.encode_pkcs8("1.3.6.1.5.5.7.6.45", bytes(83))
    assert hybrid.decode_pkcs8(pkcs8)[2] is None
    # version 1 with a [1] publicKey is returned for the caller to compare
    body = pkcs8[2:].replace(b"\x02\x01\x00", b"\x02\x01\x01", 1) + b"\x81\x03\x00\xab\xcd"
    assert hybrid.decode_pkcs8(bytes([0x30, len(body)]) + body)[2] == b"\xab\xcd"
    for bad in [
        pkcs8[:-1],
        pkcs8.replace(b"\x02\x01\x00", b"\x02\x01\x02", 1),
        bytes([0x30, len(pkcs8) - 2 + 5]) + pkcs8[2:] + b"\x81\x03\x00\xab\xcd",
    ]:
        _invalid(hybrid.decode_pkcs8, bad)  # truncated, version 2, publicKey in version 0
    _invalid(hybrid.pem_decode, b"no pem here")
    _invalid(hybrid.pem_decode, b"-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----")
