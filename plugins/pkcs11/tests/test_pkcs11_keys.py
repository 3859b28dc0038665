"""Keys on a real SoftHSM2 token: attributes, export, persistence, token lookup, PIN sources.
Token objects are checked from a separate process with its own login, as another
application would see them."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptostack_pkcs11.provider import PKCS11Provider

from cryptostack_core.sdk import (
    CipherDirection,
    CryptoError,
    ErrorCode,
    KeyFormat,
    ProviderEnvironment,
    StoredKey,
)
from cryptostack_core.sdk import KeyOperationPermission as P

ProviderFactory = Callable[..., PKCS11Provider]
Lister = Callable[[Any], list[dict[str, Any]]]
CKO_SECRET, CKO_PRIVATE, CKO_PUBLIC = 4, 3, 2


def gcm(provider: PKCS11Provider, key: Any, direction: CipherDirection, iv: bytes, data: bytes) -> bytes:
    op = provider.create_cipher("AES-256-GCM", key, direction, iv, 16)
    return op.update(data) + op.finalize()


def ecdsa_sign(provider: PKCS11Provider, key: Any, msg: bytes) -> bytes:
    op = provider.create_signer("ECDSA-P256", key, b"")
    op.update(msg)
    return op.finalize()


def ecdsa_verify(provider: PKCS11Provider, key: Any, sig: bytes, msg: bytes) -> bool:
    op = provider.create_verifier("ECDSA-P256", key, b"")
    op.update(msg)
    return op.finalize(sig)


def test_generated_keys_stay_in_the_token(
    provider: PKCS11Provider, softhsm_token: Any, list_token_objects: Lister
) -> None:
    key = provider.generate_key("AES-256", P.ENCRYPT | P.DECRYPT)
    assert not key.extractable
    with pytest.raises(CryptoError) as err:
        provider.export_key(key, KeyFormat.RAW)
    assert err.value.code is ErrorCode.KEY_OPERATION_NOT_PERMITTED
    assert list_token_objects(softhsm_token) == []  # ephemeral keys are session objects
    stored = provider.persist_key(key, "DataKey")
    assert stored.secret is False  # a reference: the key store keeps it as is
    ref = json.loads(stored.blob)
    assert ref["label"] == "cryptostack:DataKey" and ref["kind"] == "secret"
    assert ref["algorithm"] == "AES-256" and len(bytes.fromhex(ref["id"])) == 16
    [obj] = list_token_objects(softhsm_token)
    assert obj["label"] == "cryptostack:DataKey" and obj["id"] == ref["id"]
    assert obj["class"] == CKO_SECRET and obj["token"] == 1 and obj["private"] == 1
    assert obj["sensitive"] == 1 and obj["extractable"] == 0 and obj["never_extractable"] == 1
    assert obj["local"] == 1  # generated inside the token
    assert (obj["encrypt"], obj["decrypt"], obj["sign"], obj["wrap"]) == (1, 1, 0, 0)
    # copy semantics: the ephemeral key still works
    iv = os.urandom(12)
    assert (
        gcm(provider, key, CipherDirection.DECRYPT, iv, gcm(provider, key, CipherDirection.ENCRYPT, iv, b"x"))
        == b"x"
    )


def test_export_of_extractable_keys(
    provider: PKCS11Provider, softhsm_token: Any, list_token_objects: Lister
) -> None:
    """EXPORT -> CKA_EXTRACTABLE; keys the token can wrap stay sensitive and are wrapped out;
    Ed25519 (SoftHSM2 cannot wrap EdDSA keys) is created non-sensitive instead."""
    aes = provider.generate_key("AES-256", P.ENCRYPT | P.DECRYPT | P.EXPORT)
    assert aes.extractable
    material = provider.export_key(aes, KeyFormat.RAW)
    iv = os.urandom(12)
    ct = gcm(provider, aes, CipherDirection.ENCRYPT, iv, b"wrapped out")
    assert AESGCM(material).decrypt(iv, ct, b"") == b"wrapped out"
    pair = provider.generate_key("ECDSA-P256", P.SIGN | P.VERIFY | P.EXPORT)
    private = ser.load_der_private_key(provider.export_key(pair, KeyFormat.PKCS8_DER), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    theirs = private.sign(b"m", ec.ECDSA(hashes.SHA256()))
    assert ecdsa_verify(provider, pair, theirs, b"m")
    pem = provider.export_key(pair, KeyFormat.PEM)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert len(provider.export_key(pair, KeyFormat.RAW)) == 32
    ed = provider.generate_key("Ed25519", P.SIGN | P.EXPORT)
    seed = provider.export_key(ed, KeyFormat.RAW)
    op = provider.create_signer("Ed25519", ed, b"")
    op.update(b"m")
    assert op.finalize() == ed25519.Ed25519PrivateKey.from_private_bytes(seed).sign(b"m")
    hmac_key = provider.import_key("HMAC-SHA-256", b"k" * 16, KeyFormat.RAW, P.MAC | P.EXPORT)
    assert provider.export_key(hmac_key, KeyFormat.RAW) == b"k" * 16  # padding not exported
    for key, name in ((aes, "aes"), (pair, "ec"), (ed, "ed")):
        provider.persist_key(key, name)
    sensitive = {
        o["label"]: o.get("sensitive") for o in list_token_objects(softhsm_token) if o["class"] != CKO_PUBLIC
    }
    assert sensitive == {"cryptostack:aes": 1, "cryptostack:ec": 1, "cryptostack:ed": 0}
    with pytest.raises(CryptoError) as err:
        provider.export_key(aes, KeyFormat.PKCS8_DER)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT


def test_persist_load_delete_across_workers(
    make_provider: ProviderFactory, softhsm_token: Any, list_token_objects: Lister
) -> None:
    first = make_provider()
    aes = first.generate_key("AES-256", P.ENCRYPT | P.DECRYPT)
    pair = first.generate_key("ECDSA-P256", P.SIGN | P.VERIFY)
    stored_aes = first.persist_key(aes, "Aes")
    stored_pair = first.persist_key(pair, "Pair")
    second_version = first.persist_key(aes, "Aes")
    assert json.loads(second_version.blob)["id"] != json.loads(stored_aes.blob)["id"]
    objects = list_token_objects(softhsm_token)
    assert sorted(o["class"] for o in objects) == [CKO_PUBLIC, CKO_PRIVATE, CKO_SECRET, CKO_SECRET]
    # a second provider: another worker process, another login
    second = make_provider(12)
    loaded = second.load_stored_key(stored_aes, "AES-256", P.ENCRYPT | P.DECRYPT)
    assert not loaded.extractable
    iv = os.urandom(12)
    assert (
        gcm(
            second,
            loaded,
            CipherDirection.DECRYPT,
            iv,
            gcm(first, aes, CipherDirection.ENCRYPT, iv, b"persisted"),
        )
        == b"persisted"
    )
    loaded_pair = second.load_stored_key(stored_pair, "ECDSA-P256", P.SIGN | P.VERIFY)
    assert second.export_public_key(loaded_pair) == first.export_public_key(pair)
    assert ecdsa_verify(first, pair, ecdsa_sign(second, loaded_pair, b"m"), b"m")
    second.release_key(loaded)  # forgets the loaded copy; the token object stays
    assert len(list_token_objects(softhsm_token)) == 4
    second.delete_stored_key(stored_aes)
    second.delete_stored_key(stored_aes)  # already gone: nothing to do
    assert len(list_token_objects(softhsm_token)) == 3
    with pytest.raises(CryptoError) as err:
        second.load_stored_key(stored_aes, "AES-256", P.ENCRYPT)
    assert err.value.code is ErrorCode.RESOURCE_NOT_FOUND
    with pytest.raises(CryptoError) as err:
        second.load_stored_key(stored_pair, "ECDSA-P384", P.SIGN)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(CryptoError) as err:
        second.load_stored_key(StoredKey(b"\x01garbage", False), "AES-256", P.ENCRYPT)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT


def test_release_key(provider: PKCS11Provider) -> None:
    key = provider.generate_key("AES-128", P.ENCRYPT)
    provider.release_key(key)
    provider.release_key(key)
    with pytest.raises(CryptoError) as err:
        provider.create_cipher("AES-128-CBC", key, CipherDirection.ENCRYPT, bytes(16), 16).finalize()
    assert err.value.code is ErrorCode.INVALID_STATE


def test_token_is_found_by_label(
    make_provider: ProviderFactory,
    softhsm_token: Any,
    list_token_objects: Lister,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SoftHSM renumbers slots when tokens are initialised; the label is what counts."""
    first = make_provider()
    first.persist_key(first.generate_key("AES-128", P.ENCRYPT), "one")
    softhsm_token.init_token("second-token", "other-pin")
    monkeypatch.setenv("CS_TEST_OTHER_PIN", "other-pin")
    env = ProviderEnvironment(state_dir=tmp_path, config_dir=tmp_path)
    other = PKCS11Provider(
        13,
        {"module": softhsm_token.module, "token_label": "second-token", "pin_env": "CS_TEST_OTHER_PIN"},
        env,
    )
    other.start()
    try:
        assert other.describe()["token_label"] == "second-token"
        assert other.describe()["slot_id"] != first.describe()["slot_id"]
        assert other.random_bytes(8)
    finally:
        other.close()
    assert [o["label"] for o in list_token_objects(softhsm_token)] == ["cryptostack:one"]
    softhsm_token.init_token("second-token", "other-pin")  # now the label is ambiguous
    ambiguous = PKCS11Provider(
        14,
        {"module": softhsm_token.module, "token_label": "second-token", "pin_env": "CS_TEST_OTHER_PIN"},
        env,
    )
    with pytest.raises(CryptoError) as err:
        ambiguous.start()
    assert err.value.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert "several tokens" in err.value.message
    ambiguous.close()


def test_pin_sources_and_start_failures(softhsm_token: Any, tmp_path: Path) -> None:
    env = ProviderEnvironment(state_dir=tmp_path, config_dir=tmp_path)
    (tmp_path / "user.pin").write_text(softhsm_token.pin + "\n")
    base = {"module": softhsm_token.module, "token_label": softhsm_token.label}
    from_file = PKCS11Provider(1, {**base, "pin_file": "user.pin"}, env)
    from_file.start()
    try:
        assert from_file.random_bytes(4)
    finally:
        from_file.close()

    with pytest.raises(CryptoError) as err:  # the PIN never goes in the configuration
        PKCS11Provider(1, {**base, "pin": softhsm_token.pin}, env)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT and "pin_file" in err.value.message
    with pytest.raises(CryptoError) as err:
        PKCS11Provider(1, {**base, "pin_env": "X", "pin_file": "user.pin"}, env)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(CryptoError) as err:
        PKCS11Provider(1, {**base, "pin_env": "X", "slot": 0}, env)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT

    (tmp_path / "wrong.pin").write_text("not-the-pin")
    failures = {
        "wrong PIN": {**base, "pin_file": "wrong.pin"},
        "missing PIN variable": {**base, "pin_env": "CS_TEST_NO_SUCH_VARIABLE"},
        "missing PIN file": {**base, "pin_file": "absent.pin"},
        "unknown token": {**base, "token_label": "no-such-token", "pin_file": "user.pin"},
        "bad module": {**base, "module": str(tmp_path / "none.so"), "pin_file": "user.pin"},
    }
    for what, options in failures.items():
        provider = PKCS11Provider(1, options, env)
        with pytest.raises(CryptoError) as err:
            provider.start()
        assert err.value.code is ErrorCode.PROVIDER_UNAVAILABLE, what
        provider.close()
