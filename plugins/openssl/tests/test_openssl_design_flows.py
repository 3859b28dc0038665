"""The design's eight flows end to end: a real daemon subprocess, its unix socket, the
software provider with the design's provider ids (openssl 2, pkcs11 5)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa
from pqcrypto import InvalidSignatureError
from pqcrypto.sign import ml_dsa_65 as independent_mldsa

import cryptostack_core as cs
from cryptostack_core import CipherDirection as D
from cryptostack_core import ErrorCode as E
from cryptostack_core import KeyOperationPermission as P
from cryptostack_core.testing.daemon import DaemonProcess

PKI = Path(__file__).resolve().parents[3] / "examples" / "pki"
DESIGN_CONFIG: dict[str, Any] = {
    "providers": [{"name": "openssl", "id": 2}, {"name": "pkcs11", "id": 5, "optional": True}],
    "key_slots": [
        {
            "name": "PreDeployedSlot",
            "algorithm": "AES-256",
            "provider": 2,
            "compatible_providers": [2, 5],
            "permissions": ["encrypt", "decrypt"],
            "provision": "generate",
        },
        {
            "name": "MyNewSlot",
            "algorithm": "AES-256",
            "provider": 2,
            "permissions": ["encrypt", "decrypt"],
        },
        {
            "name": "SigningKey",
            "algorithm": "ECDSA-P256",
            "provider": 2,
            "permissions": ["sign", "verify"],
            "provision": "generate",
        },
    ],
    # The demo PKI (examples/pki, valid 2025-2045): a device certificate under a root CA.
    "cert_slots": [{"name": "DeviceCert", "file": str(PKI / "device.pem")}],
    "trust_stores": [
        {"name": "RootCA", "anchors": [str(PKI / "root.pem")], "crls": [str(PKI / "root.crl.pem")]}
    ],
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with DaemonProcess(tmp_path_factory.mktemp("design"), DESIGN_CONFIG) as proc:
        yield proc


@pytest.fixture
def ctx(daemon: DaemonProcess) -> Iterator[cs.CryptoContext]:
    with daemon.stack(timeout=5) as stack, stack.create_crypto_context() as context:
        yield context


def cipher(ctx: cs.CryptoContext, alg: str, key: object, direction: D) -> cs.CipherContext:
    return ctx.create_cipher_context(
        cs.CipherContextConfig().set_algorithm(alg).set_key(key).set_direction(direction)
    )


def test_flow1_slot_direct_aes_256_cbc(ctx: cs.CryptoContext) -> None:
    slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
    iv, plaintext = os.urandom(16), os.urandom(1000)
    enc = cipher(ctx, "AES-256-CBC", slot, D.ENCRYPT)
    enc.init(iv)
    ct = enc.update(plaintext[:333]) + enc.update(plaintext[333:]) + enc.finalize()
    assert enc.provider == 2 and len(ct) == 1008
    dec = cipher(ctx, "AES-256-CBC", slot, D.DECRYPT)
    dec.init(iv)
    assert dec.update(ct) + dec.finalize() == plaintext


def test_flow2_guard_path_slot_info_two_contexts(ctx: cs.CryptoContext) -> None:
    slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
    km = ctx.create_key_management_context(cs.KeyManagementContextConfig())
    key_guard = km.load_key(slot)
    assert key_guard.type is cs.ResourceType.KEY
    info = km.get_key_slot_info(slot)
    assert (info.status, info.algorithm, info.provider, info.compatible_providers) == (
        cs.KeySlotStatus.OCCUPIED,
        "AES-256",
        2,
        [2, 5],
    )
    enc = cipher(ctx, "AES-256-CBC", key_guard, D.ENCRYPT)
    dec = cipher(ctx, "AES-256-CBC", key_guard, D.DECRYPT)
    iv = os.urandom(16)
    enc.init(iv)
    ct = enc.update(b"two contexts") + enc.finalize()
    dec.init(iv)
    assert dec.update(ct) + dec.finalize() == b"two contexts"
    key_guard.release()
    key_guard.release()
    with pytest.raises(cs.CryptoError) as err:
        cipher(ctx, "AES-256-CBC", key_guard, D.ENCRYPT)
    assert err.value.code is E.RESOURCE_NOT_FOUND


def test_flow3_ephemeral_gcm_persist_copy_semantics(ctx: cs.CryptoContext) -> None:
    km = ctx.create_key_management_context()
    eph = km.generate_key(
        cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.DECRYPT)
    )
    assert (eph.type, eph.persistence, eph.permitted_operations) == (
        cs.ResourceType.KEY,
        cs.ResourcePersistence.EPHEMERAL,
        P.ENCRYPT | P.DECRYPT,
    )
    nonce = os.urandom(12)
    enc = cipher(ctx, "AES-256-GCM", eph, D.ENCRYPT)
    enc.init(nonce)
    sealed = enc.update(b"data to keep") + enc.finalize()
    target = ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT)
    km.persist_key(target, eph)
    enc.init(os.urandom(12))  # the guard keeps working after persisting
    enc.update(b"more")
    enc.finalize()
    dec = cipher(ctx, "AES-256-GCM", target, D.DECRYPT)
    dec.init(nonce)
    assert dec.update(sealed) == b""
    assert dec.finalize() == b"data to keep"


def test_flow4_hashing_streaming_single_shot_reset_abort(ctx: cs.CryptoContext) -> None:
    h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
    h.init()
    h.update(b"chunk1")
    h.update(b"chunk2")
    assert h.finalize() == hashlib.sha256(b"chunk1chunk2").digest()
    assert h.single_shot(b"input") == hashlib.sha256(b"input").digest()
    h.reset()
    h.init()
    h.update(b"message2")
    assert h.finalize() == hashlib.sha256(b"message2").digest()
    h.init()
    h.update(b"partial data")
    h.reset()
    h.init()
    h.update(b"correct data")
    assert h.finalize() == hashlib.sha256(b"correct data").digest()


def test_flow5_ml_dsa_65_signature_verified_independently(ctx: cs.CryptoContext) -> None:
    km = ctx.create_key_management_context()
    signing_key = km.generate_key(cs.GenerateKeyParams().set_algorithm("ML-DSA-65"))
    signer = ctx.create_sign_context(
        cs.SignContextConfig().set_algorithm("ML-DSA-65").set_key(signing_key)
    )
    assert signer.get_signature_size() == 3309  # FIPS 204 (the design's ~3293 is pre-standard)
    message = os.urandom(5000)
    signer.init()
    for i in range(0, len(message), 700):
        signer.update(message[i : i + 700])
    signature = signer.sign_finalize()
    assert len(signature) == 3309
    raw_public = km.export_public_key(signing_key, cs.KeyFormat.RAW)
    # PQClean (pqcrypto) shares no code with OpenSSL; verify() raises on a bad signature.
    independent_mldsa.verify(raw_public, message, signature)
    with pytest.raises(InvalidSignatureError):
        independent_mldsa.verify(raw_public, message + b"!", signature)
    mldsa.MLDSA65PublicKey.from_public_bytes(raw_public).verify(signature, message)


def test_flow6_certificate_verification_and_public_key(ctx: cs.CryptoContext) -> None:
    cert = ctx.resolve_resource("DeviceCert", cs.ResourceType.CERT_SLOT)
    anchor = ctx.resolve_resource("RootCA", cs.ResourceType.VERIFICATION_TRUST_STORE)
    verifier = ctx.create_certificate_verification_context(
        cs.CertificateVerificationContextConfig()
    )
    verifier.set_certificate(cert)
    verifier.set_verification_trust_store(anchor)
    verifier.set_revocation_check_policy(cs.RevocationCheckPolicy.CRL_ONLY)
    assert verifier.verify() is cs.CertVerifyResult.VALID, verifier.explain()
    assert len(verifier.validated_chain()) == 2
    cert_mgmt = ctx.create_certificate_management_context()
    pub_key, alg = cert_mgmt.load_certificate_public_key(cert)
    assert alg == "ECDSA-P256" and pub_key.provider == 2
    assert pub_key.permitted_operations == P.VERIFY
    with pytest.raises(cs.CryptoError) as err:
        ctx.create_sign_context(cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(pub_key))
    assert err.value.code is E.KEY_OPERATION_NOT_PERMITTED
    pub_key.release()
    # A validation time past the device certificate's notAfter.
    verifier.set_validation_time(datetime(2046, 1, 1, tzinfo=UTC))
    assert verifier.verify() is cs.CertVerifyResult.EXPIRED


def test_flow7_permissions(ctx: cs.CryptoContext) -> None:
    km = ctx.create_key_management_context()
    enc_key = km.generate_key(
        cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.DECRYPT)
    )
    cipher(ctx, "AES-256-CBC", enc_key, D.ENCRYPT).close()
    with pytest.raises(cs.CryptoError) as err:
        ctx.create_sign_context(
            cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(enc_key)
        )
    assert err.value.code is E.KEY_OPERATION_NOT_PERMITTED
    slot = ctx.resolve_resource("SigningKey", cs.ResourceType.KEY_SLOT)
    perms = ctx.get_key_slot_object(slot).get_permitted_operations()
    assert cs.has_permission(perms, P.SIGN) and not cs.has_permission(perms, P.ENCRYPT)
    auth_key = km.generate_key(
        cs.GenerateKeyParams().set_algorithm("ECDSA-P256").set_permissions(P.AUTHENTICATION)
    )
    sig = ctx.create_sign_context(
        cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(auth_key)
    ).sign(b"msg")
    assert ctx.create_verify_context(
        cs.VerifyContextConfig().set_algorithm("ECDSA-P256").set_key(auth_key)
    ).verify(b"msg", sig)
    for alg in ("AES-256-CBC", "AES-256-GCM"):
        with pytest.raises(cs.CryptoError) as err:
            cipher(ctx, alg, auth_key, D.ENCRYPT)
        assert err.value.code is E.KEY_OPERATION_NOT_PERMITTED


def test_flow8_timeouts(daemon: DaemonProcess) -> None:
    config = (
        cs.CryptoStackConfig()
        .set_connection_endpoint(daemon.endpoint)
        .set_default_operation_timeout(timedelta(milliseconds=500))
    )
    with cs.create_crypto_stack(config) as stack:
        ctx = stack.create_crypto_context()
        h = ctx.create_hash_context(
            cs.HashContextConfig()
            .set_algorithm("SHA-256")
            .set_operation_timeout(timedelta(milliseconds=200))
        )
        assert h.timeout == pytest.approx(0.2)
        h.init()
        h.update(b"chunk1")
        assert h.finalize() == hashlib.sha256(b"chunk1").digest()
        tight = ctx.create_key_management_context(
            cs.KeyManagementContextConfig().set_operation_timeout(timedelta(milliseconds=1))
        )
        assert tight.timeout == pytest.approx(0.001)
        started = time.monotonic()
        with pytest.raises(cs.CryptoError) as err:
            tight.generate_key(cs.GenerateKeyParams().set_algorithm("RSA-4096"))
        assert err.value.code is E.OPERATION_TIMED_OUT
        assert time.monotonic() - started < 20  # at the 1 ms deadline, not after RSA-4096
        with pytest.raises(cs.CryptoError) as err:
            tight.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256"))
        assert err.value.code is E.CONTEXT_IN_ERROR_STATE
        keygen = ctx.create_key_management_context(
            cs.KeyManagementContextConfig().disable_timeout()
        )
        assert keygen.timeout is None
        pqc_key = keygen.generate_key(cs.GenerateKeyParams().set_algorithm("ML-KEM-768"))
        assert pqc_key.algorithm == "ML-KEM-768"
        assert len(h.single_shot(b"other contexts are unaffected")) == 32
        # The abandoned RSA generation did not leave a key behind for this client.
        import os as _os

        me = {c["pid"]: c for c in stack.status()["clients"]}[_os.getpid()]
        assert me["guards"] == 1
