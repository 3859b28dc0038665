"""The oqs provider next to the openssl provider (pyca/OpenSSL), through the SDK: ML-DSA
public keys and signatures move both ways (context strings included), ML-KEM key pairs move
both ways in their PKCS#8 seed form, and what cannot move says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptostack_oqs.provider import OQSProvider

from cryptostack_core.sdk import CryptoError, ErrorCode, KeyFormat, Provider, ProviderEnvironment, ProviderKey
from cryptostack_core.sdk import KeyOperationPermission as P

pytestmark = pytest.mark.liboqs

MESSAGE = b"signed on one provider, verified on the other"


@pytest.fixture(scope="module")
def openssl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    from cryptostack_openssl import OpenSSLProvider  # type: ignore[import-not-found]

    tmp: Path = tmp_path_factory.mktemp("openssl")
    instance = OpenSSLProvider(2, {}, ProviderEnvironment(tmp, tmp))
    instance.start()
    yield instance
    instance.close()


def _sign(provider: Provider, algorithm: str, key: ProviderKey, context: bytes) -> bytes:
    op = provider.create_signer(algorithm, key, context)
    op.update(MESSAGE)
    return op.finalize()


def _verify(provider: Provider, algorithm: str, key: ProviderKey, signature: bytes, context: bytes) -> bool:
    op = provider.create_verifier(algorithm, key, context)
    op.update(MESSAGE)
    return op.finalize(signature)


@pytest.mark.parametrize("algorithm", ["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"])
def test_mldsa_keys_and_signatures_cross_over(
    provider: OQSProvider, openssl: Provider, algorithm: str
) -> None:
    for signer, verifier in ((provider, openssl), (openssl, provider)):
        key = signer.generate_key(algorithm, P.SIGN | P.VERIFY)
        spki = signer.export_public_key(key, KeyFormat.SPKI_DER)
        public = verifier.import_key(algorithm, spki, KeyFormat.SPKI_DER, P.VERIFY)
        assert verifier.export_public_key(public, KeyFormat.SPKI_DER) == spki  # same bytes
        for context in (b"", b"interop"):
            signature = _sign(signer, algorithm, key, context)
            assert _verify(verifier, algorithm, public, signature, context)
            assert not _verify(verifier, algorithm, public, signature, context + b"?")
            tampered = bytearray(signature)
            tampered[100] ^= 0x04
            assert not _verify(verifier, algorithm, public, bytes(tampered), context)


def test_mlkem_pairs_move_both_ways_as_pkcs8(provider: OQSProvider, openssl: Provider) -> None:
    # This is the daemon's key transfer path (export PKCS8_DER, import PKCS8_DER).
    for home, guest in ((provider, openssl), (openssl, provider)):
        pair = home.generate_key("ML-KEM-768", P.ENCAPSULATE | P.DECAPSULATE)
        copy = guest.import_key(
            "ML-KEM-768",
            home.export_key(pair, KeyFormat.PKCS8_DER),
            KeyFormat.PKCS8_DER,
            P.ENCAPSULATE | P.DECAPSULATE,
        )
        ciphertext, sent = home.encapsulate("ML-KEM-768", pair, P.DERIVE)
        received = guest.decapsulate("ML-KEM-768", copy, ciphertext, P.DERIVE)
        assert guest.export_key(received, KeyFormat.RAW) == home.export_key(sent, KeyFormat.RAW)


def test_mldsa_private_keys_do_not_move_and_say_so(provider: OQSProvider, openssl: Provider) -> None:
    # liboqs ML-DSA keys have no seed, and pyca reads only seed-form ML-DSA private keys.
    ours = provider.generate_key("ML-DSA-65", P.SIGN)
    with pytest.raises(CryptoError) as exc:
        openssl.import_key(
            "ML-DSA-65", provider.export_key(ours, KeyFormat.PKCS8_DER), KeyFormat.PKCS8_DER, P.SIGN
        )
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    theirs = openssl.generate_key("ML-DSA-65", P.SIGN)
    with pytest.raises(CryptoError) as exc:
        provider.import_key(
            "ML-DSA-65", openssl.export_key(theirs, KeyFormat.PKCS8_DER), KeyFormat.PKCS8_DER, P.SIGN
        )
    assert exc.value.code is ErrorCode.UNSUPPORTED_ALGORITHM and "seed" in exc.value.message


def test_shared_secret_moves_to_openssl_for_derivation(provider: OQSProvider, openssl: Provider) -> None:
    # KEM secrets live on oqs as GENERIC-SECRET; the daemon copies them (RAW) to a provider
    # that can derive from them.
    pair = provider.generate_key("ML-KEM-1024", P.ENCAPSULATE | P.DECAPSULATE)
    _, secret = provider.encapsulate("ML-KEM-1024", pair, P.DERIVE)
    assert secret.extractable
    copy = openssl.import_key(
        "GENERIC-SECRET", provider.export_key(secret, KeyFormat.RAW), KeyFormat.RAW, P.DERIVE
    )
    derived = openssl.derive(
        "HKDF-SHA-256",
        copy,
        length=32,
        salt=b"",
        info=b"ctx",
        output_algorithm="AES-256",
        permissions=P.ENCRYPT,
    )
    assert derived.size == 32
