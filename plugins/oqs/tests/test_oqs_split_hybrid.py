"""Hybrid keys split between liboqs and OpenSSL over a real daemon: X25519MLKEM768 with its
ML-KEM-768 half on oqs and its X25519 half on openssl, the daemon joining ciphertexts and
concatenating the secrets; composite ML-DSA with its ML-DSA half on oqs
(docs/hybrid.md, "Halves on two providers").

Known answers (the composed X25519MLKEM768 vectors), interop with pyca for each half in
both directions, negatives (truncated ciphertexts, low-order X25519 shares), the shared
secret's permissions, explain and audit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

import cryptostack_core as cs
from cryptostack_core.testing import hybrid_vectors as hv
from cryptostack_core.testing.daemon import DaemonProcess

pytestmark = pytest.mark.liboqs

P = cs.KeyOperationPermission
F = cs.KeyFormat
OPENSSL, OQS = 2, 3
KEM = "X25519MLKEM768"
SPLIT = {"pq": OQS, "classical": OPENSSL}
# A low-order point of Curve25519 (order 8, Wycheproof x25519 tcId 63's public key).
LOW_ORDER = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("split")
    config = {
        "daemon": {"audit_log": str(directory / "audit.jsonl")},
        "providers": [
            {"name": "openssl", "id": OPENSSL, "options": {}},
            {"name": "oqs", "id": OQS, "options": {}},
        ],
    }
    with DaemonProcess(directory / "d", config) as running:
        yield running


def audit(daemon: DaemonProcess) -> list[dict[str, Any]]:
    path = Path(daemon.config["daemon"]["audit_log"])
    return [json.loads(line) for line in path.read_text().splitlines()]


def kem_context(ctx: cs.CryptoContext, key: Any, derived: P = P.DERIVE | P.EXPORT) -> cs.KemContext:
    return ctx.create_kem_context(
        cs.KemContextConfig().set_algorithm(KEM).set_key(key).set_derived_key_permissions(derived)
    )


def split_key(km: cs.KeyManagementContext, perms: P) -> cs.CryptoResourceGuard:
    return km.generate_key(
        cs.GenerateKeyParams().set_algorithm(KEM).set_permissions(perms).set_component_providers(**SPLIT)
    )


def test_composed_known_answers_split(daemon: DaemonProcess) -> None:
    """Every composed X25519MLKEM768 known answer (Wycheproof ML-KEM-768 with RFC 7748 and
    Wycheproof X25519), each key imported with its ML-KEM half on oqs and its X25519 half on
    openssl; the invalid ones must be INVALID_ARGUMENT."""
    with daemon.stack() as stack:
        report = hv.run(stack, None, lambda name: name == KEM, components=SPLIT)
    assert not report.failures, report.failures
    assert report.counts == {KEM: len(hv.x25519mlkem768_vectors())}


def test_split_kem_interoperates_with_pyca_halves(daemon: DaemonProcess) -> None:
    with daemon.stack() as stack, stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        key = split_key(km, P.ENCAPSULATE | P.DECAPSULATE | P.EXPORT)
        assert key.components == [
            {"role": "pq", "provider": OQS, "algorithm": "ML-KEM-768"},
            {"role": "classical", "provider": OPENSSL, "algorithm": "X25519"},
        ]
        private = km.export_key(key, F.SEED)
        public = km.export_public_key(key, F.RAW)
        assert len(private) == 96 and len(public) == 1216
        mlkem_private = mlkem.MLKEM768PrivateKey.from_seed_bytes(private[:64])
        x_private = x25519.X25519PrivateKey.from_private_bytes(private[64:])
        assert (
            public
            == mlkem_private.public_key().public_bytes_raw() + x_private.public_key().public_bytes_raw()
        )

        # pyca encapsulates to the split key's public key; the daemon decapsulates
        ss_m, ct_m = mlkem_private.public_key().encapsulate()
        ephemeral = x25519.X25519PrivateKey.generate()
        ct_x = ephemeral.public_key().public_bytes_raw()
        expected = ss_m + ephemeral.exchange(x_private.public_key())
        with kem_context(ctx, key) as kem:
            assert kem.components == key.components
            assert km.export_key(kem.decapsulate(ct_m + ct_x), F.RAW) == expected
            # the daemon encapsulates; pyca decapsulates each half
            ciphertext, guard = kem.encapsulate()
            secret = km.export_key(guard, F.RAW)
        assert len(ciphertext) == 1120
        assert secret == mlkem_private.decapsulate(ciphertext[:1088]) + x_private.exchange(
            x25519.X25519PublicKey.from_public_bytes(ciphertext[1088:])
        )

        # the same private key held whole on openssl agrees with the split one
        whole = km.import_key(
            cs.ImportKeyParams()
            .set_algorithm(KEM)
            .set_material(private, F.SEED)
            .set_provider(OPENSSL)
            .set_permissions(P.DECAPSULATE)
        )
        assert whole.components == []
        with kem_context(ctx, whole) as kem:
            assert km.export_key(kem.decapsulate(ciphertext), F.RAW) == secret


def test_split_kem_refuses_bad_input_before_any_half_runs(daemon: DaemonProcess) -> None:
    with daemon.stack() as stack, stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        key = split_key(km, P.ENCAPSULATE | P.DECAPSULATE)
        with kem_context(ctx, key) as kem:
            ciphertext, _ = kem.encapsulate()
            for bad in (ciphertext[:-1], ciphertext + b"\0", b"", ciphertext[:1088]):
                with pytest.raises(cs.CryptoError) as err:
                    kem.decapsulate(bad)
                assert err.value.code is cs.ErrorCode.INVALID_ARGUMENT
            # a low-order X25519 share: the TLS draft aborts (RFC 8446 section 7.4.2)
            with pytest.raises(cs.CryptoError) as err:
                kem.decapsulate(ciphertext[:1088] + LOW_ORDER)
            assert err.value.code is cs.ErrorCode.INVALID_ARGUMENT
        public = km.export_public_key(key, F.RAW)
        with pytest.raises(cs.CryptoError) as err:  # a public key with a low-order half
            km.import_key(
                cs.ImportKeyParams()
                .set_algorithm(KEM)
                .set_material(public[:1184] + LOW_ORDER, F.RAW)
                .set_component_providers(**SPLIT)
            )
        assert err.value.code is cs.ErrorCode.INVALID_ARGUMENT
        assert "low-order" in err.value.message
        for fmt in (F.SPKI_DER, F.PKCS8_DER):  # no OID: no such encodings
            with pytest.raises(cs.CryptoError) as err:
                km.export_public_key(key, fmt)
            assert err.value.code is cs.ErrorCode.INVALID_ARGUMENT


def test_the_shared_secret_keeps_the_requested_permissions(daemon: DaemonProcess) -> None:
    """The combined secret is a key with exactly the context's derived-key permissions (no
    EXPORT unless asked); the halves' own secrets never become handles."""
    with daemon.stack() as stack, stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        key = split_key(km, P.ENCAPSULATE | P.DECAPSULATE)
        before = _resources(stack)
        with kem_context(ctx, key, P.DERIVE) as kem:
            ciphertext, sent = kem.encapsulate()
            received = kem.decapsulate(ciphertext)
            assert sent.permitted_operations == P.DERIVE == received.permitted_operations
            for guard in (sent, received):
                with pytest.raises(cs.CryptoError) as err:
                    km.export_key(guard, F.RAW)
                assert err.value.code is cs.ErrorCode.KEY_OPERATION_NOT_PERMITTED
            # usable as what it is: both sides derive the same AES key
            derived = [
                km.derive_key(
                    cs.DeriveKeyParams()
                    .set_key(guard)
                    .set_algorithm("HKDF-SHA-256")
                    .set_info(b"split")
                    .set_output("AES-256")
                    .set_permissions(P.ENCRYPT | P.DECRYPT)
                )
                for guard in (sent, received)
            ]
            iv, message = os.urandom(12), b"one secret, two providers"
            with ctx.create_cipher_context(
                cs.CipherContextConfig()
                .set_algorithm("AES-256-GCM")
                .set_key(derived[0])
                .set_direction(cs.CipherDirection.ENCRYPT)
            ) as enc:
                enc.init(iv)
                sealed = enc.update(message) + enc.finalize()
            with ctx.create_cipher_context(
                cs.CipherContextConfig()
                .set_algorithm("AES-256-GCM")
                .set_key(derived[1])
                .set_direction(cs.CipherDirection.DECRYPT)
            ) as dec:
                dec.init(iv)
                assert dec.update(sealed) + dec.finalize() == message
            assert _resources(stack) == before + 4  # two secrets, two derived keys
            for guard in (sent, received, *derived):
                guard.release()
        assert _resources(stack) == before


def _resources(stack: cs.CryptoStack) -> int:
    me = [c for c in stack.status()["clients"] if c["pid"] == os.getpid()]
    return sum(c["resources"] for c in me)


def test_explain_and_audit_of_a_split_kem(daemon: DaemonProcess) -> None:
    with daemon.stack() as stack, stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        key = split_key(km, P.ENCAPSULATE | P.DECAPSULATE)
        explained = stack.explain(KEM, "decapsulate", key=key)
        assert [(c["role"], c["provider"], c["taken"]) for c in explained] == [
            ("pq", OQS, True),
            ("classical", OPENSSL, True),
            ("combiner", 0, True),
        ]
        assert "ss_ML-KEM || ss_X25519" in explained[-1]["reason"]
        with kem_context(ctx, key) as kem:
            ciphertext, _ = kem.encapsulate()
            kem.decapsulate(ciphertext)
    uses = [r for r in audit(daemon) if r["action"] == "key.use" and r["algorithm"] == KEM and r["providers"]]
    assert [r["operation"] for r in uses[-2:]] == ["encapsulate", "decapsulate"]
    for record in uses[-2:]:
        assert record["providers"] == [OQS, OPENSSL] and record["result"] == "ok"
        assert "classical X25519 on openssl (2)" in record["detail"]


def test_composite_with_the_mldsa_half_on_liboqs(daemon: DaemonProcess) -> None:
    algorithm = "ML-DSA-87-ECDSA-P384-SHA512"
    message = os.urandom(200)
    with daemon.stack() as stack, stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        key = km.generate_key(
            cs.GenerateKeyParams().set_algorithm(algorithm).set_component_providers(**SPLIT)
        )
        assert [c["provider"] for c in key.components] == [OQS, OPENSSL]
        with ctx.create_sign_context(cs.SignContextConfig().set_algorithm(algorithm).set_key(key)) as signer:
            signature = signer.sign(message)
        whole = km.import_key(
            cs.ImportKeyParams()
            .set_algorithm(algorithm)
            .set_provider(OPENSSL)
            .set_material(km.export_public_key(key), F.SPKI_DER)
        )
        for verifier_key in (key, whole):
            with ctx.create_verify_context(
                cs.VerifyContextConfig().set_algorithm(algorithm).set_key(verifier_key)
            ) as verifier:
                assert verifier.verify(message, signature)
                assert not verifier.verify(
                    message, signature[:100] + bytes([signature[100] ^ 1]) + signature[101:]
                )
        # liboqs cannot expand an ML-DSA seed: a composite private key cannot be imported
        # with its ML-DSA half there, and says why
        params = cs.GenerateKeyParams().set_algorithm(algorithm).set_permissions(P.SIGN | P.VERIFY | P.EXPORT)
        exported = km.export_key(km.generate_key(params), F.RAW)
        with pytest.raises(cs.CryptoError) as err:
            km.import_key(
                cs.ImportKeyParams()
                .set_algorithm(algorithm)
                .set_material(exported, F.RAW)
                .set_permissions(P.SIGN)
                .set_component_providers(**SPLIT)
            )
        assert "seed" in err.value.message
