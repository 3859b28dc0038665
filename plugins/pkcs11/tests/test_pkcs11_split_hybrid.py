"""Composite ML-DSA keys split across providers over a real daemon: the classical half
(ECDSA, Ed25519, RSA-PSS) in a SoftHSM2 token, the ML-DSA half in the OpenSSL provider
(or liboqs), the daemon joining them (docs/hybrid.md, "Halves on two providers").

* the draft's published vectors of every composite whose classical half the token holds,
  imported split, through the public API;
* interop: signatures of split keys checked half by half with pyca/cryptography over an M'
  recomputed here with hashlib, and by the OpenSSL provider holding the whole public key;
  signatures made with pyca halves verified by split keys;
* negatives: one half wrong, halves from another signature, impossible lengths;
* explain, the one audit record naming both providers, a half's provider down
  (PROVIDER_UNAVAILABLE, never one half alone), algorithms that cannot be split, and keys
  with both halves on one provider;
* split key slots: provisioned and persisted split (the ECDSA/Ed25519 half a token object,
  the ML-DSA half wrapped in the store, one version over both), rotated, loaded by version,
  retired and cleared (token objects destroyed only once unused), through a daemon crash
  and restart, from the asyncio client and the command line; a daemon killed between the
  halves and the slot's row leaves no half version, and the next start reconciles.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa

import cryptostack_core as cs
from cryptostack_core.testing import hybrid_vectors as hv
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.waiting import eventually, wait_for_exit

P = cs.KeyOperationPermission
F = cs.KeyFormat
SOFT, OQS, HSM = 2, 3, 5
PREFIX = b"CompositeAlgorithmSignatures2025"  # draft-ietf-lamps-pq-composite-sigs-19
P256 = "ML-DSA-65-ECDSA-P256-SHA512"
ED = "ML-DSA-65-Ed25519-SHA512"
LABELS = {P256: b"COMPSIG-MLDSA65-ECDSA-P256-SHA512", ED: b"COMPSIG-MLDSA65-Ed25519-SHA512"}
MLDSA65_PUBLIC, MLDSA65_SIGNATURE = 1952, 3309
SPLIT = {"pq": SOFT, "classical": HSM}


def config(token: Any, tmp_path: Path, *, oqs: bool = False, openssl: bool = True) -> dict[str, Any]:
    providers = [{"name": "pkcs11", "id": HSM, "options": token.options()}]
    if openssl:
        providers.insert(0, {"name": "openssl", "id": SOFT, "options": {}})
    if oqs:
        providers.append({"name": "oqs", "id": OQS, "options": {}})
    return {"daemon": {"audit_log": str(tmp_path / "audit.jsonl")}, "providers": providers}


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def generate(km: cs.KeyManagementContext, algorithm: str, **components: int) -> cs.CryptoResourceGuard:
    params = cs.GenerateKeyParams().set_algorithm(algorithm)
    if components:
        params.set_component_providers(**components)
    return km.generate_key(params)


def sign(ctx: cs.CryptoContext, algorithm: str, key: Any, message: bytes, context: bytes = b"") -> bytes:
    config_ = cs.SignContextConfig().set_algorithm(algorithm).set_key(key).set_context(context)
    with ctx.create_sign_context(config_) as signer:
        return bytes(signer.sign(message))


def verify(
    ctx: cs.CryptoContext,
    algorithm: str,
    key: Any,
    message: bytes,
    signature: bytes,
    context: bytes = b"",
    provider: int | None = None,
) -> bool:
    config_ = cs.VerifyContextConfig().set_algorithm(algorithm).set_key(key).set_context(context)
    if provider is not None:
        config_.set_provider(provider)
    with ctx.create_verify_context(config_) as verifier:
        return bool(verifier.verify(message, signature))


def m_prime(algorithm: str, message: bytes, context: bytes) -> bytes:
    """The composite message representative, recomputed from the draft (section 4.2)."""
    return PREFIX + LABELS[algorithm] + bytes([len(context)]) + context + hashlib.sha512(message).digest()


def test_published_vectors_split_with_the_classical_half_in_the_token(
    tmp_path: Path, softhsm_token: Any
) -> None:
    """Every composite the token can hold the classical half of (ECDSA P-256/P-384,
    Ed25519, RSA-PSS-SHA256 with 2048/3072-bit keys): the draft's vectors, each key imported
    with its ML-DSA half on openssl and its classical half in the token; the deterministic
    Ed25519 half the token computes equals the published one."""
    with DaemonProcess(tmp_path / "d", config(softhsm_token, tmp_path)) as daemon, daemon.stack() as stack:
        table = {e["name"]: e for e in stack.algorithms()}
        splittable = {
            name
            for name, e in table.items()
            if e.get("split", {}).get("splittable") and name != "X25519MLKEM768"
        }
        assert splittable == {
            "ML-DSA-44-RSA2048-PSS-SHA256",
            "ML-DSA-44-Ed25519-SHA512",
            "ML-DSA-44-ECDSA-P256-SHA256",
            "ML-DSA-65-RSA3072-PSS-SHA512",
            P256,
            "ML-DSA-65-ECDSA-P384-SHA512",
            ED,
            "ML-DSA-87-ECDSA-P384-SHA512",
            "ML-DSA-87-RSA3072-PSS-SHA512",
        }
        report = hv.run(stack, None, splittable.__contains__, components=SPLIT)
    assert not report.failures, report.failures
    assert report.counts == {name: 1 for name in splittable}
    records = [r for r in audit(tmp_path) if r["action"] == "key.import"]
    assert records and all(r["providers"] == [SOFT, HSM] for r in records)


@pytest.mark.parametrize("algorithm", [P256, ED])
def test_split_key_signs_and_pyca_verifies_each_half(
    tmp_path: Path, softhsm_token: Any, algorithm: str
) -> None:
    message, context = os.urandom(3000), b"split context"
    with (
        DaemonProcess(tmp_path / "d", config(softhsm_token, tmp_path)) as daemon,
        daemon.stack() as stack,
        stack.create_crypto_context() as ctx,
    ):
        km = ctx.create_key_management_context()
        key = generate(km, algorithm, pq=SOFT, classical=HSM)
        assert key.components == [
            {"role": "pq", "provider": SOFT, "algorithm": "ML-DSA-65"},
            {
                "role": "classical",
                "provider": HSM,
                "algorithm": "ECDSA-P256" if algorithm == P256 else "Ed25519",
            },
        ]
        assert key.provider == SOFT and key.permitted_operations == P.SIGN | P.VERIFY
        config_ = cs.SignContextConfig().set_algorithm(algorithm).set_key(key)
        config_.set_context(context)
        with ctx.create_sign_context(config_) as signer:
            assert signer.components == key.components
            signer.init()
            for chunk in (message[:1000], message[1000:]):  # PH streams in the daemon
                signer.update(chunk)
            signature = bytes(signer.sign_finalize())
        public = km.export_public_key(key, F.RAW)
        spki = km.export_public_key(key, F.SPKI_DER)

        # each half with pyca, over M' recomputed here
        represented = m_prime(algorithm, message, context)
        mldsa_public = mldsa.MLDSA65PublicKey.from_public_bytes(public[:MLDSA65_PUBLIC])
        mldsa_public.verify(signature[:MLDSA65_SIGNATURE], represented, LABELS[algorithm])
        if algorithm == P256:
            point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public[MLDSA65_PUBLIC:])
            point.verify(signature[MLDSA65_SIGNATURE:], represented, ec.ECDSA(hashes.SHA256()))
        else:
            ed25519.Ed25519PublicKey.from_public_bytes(public[MLDSA65_PUBLIC:]).verify(
                signature[MLDSA65_SIGNATURE:], represented
            )

        # the whole public key on openssl (both halves there) accepts it too
        native = km.import_key(
            cs.ImportKeyParams().set_algorithm(algorithm).set_material(spki, F.SPKI_DER).set_provider(SOFT)
        )
        assert native.components == []
        assert verify(ctx, algorithm, native, message, signature, context, provider=SOFT)
        assert verify(ctx, algorithm, key, message, signature, context)
        assert not verify(ctx, algorithm, key, message, signature, b"another context")


def test_one_half_wrong_fails_the_whole_verification(tmp_path: Path, softhsm_token: Any) -> None:
    message = b"both halves must verify"
    with (
        DaemonProcess(tmp_path / "d", config(softhsm_token, tmp_path)) as daemon,
        daemon.stack() as stack,
        stack.create_crypto_context() as ctx,
    ):
        km = ctx.create_key_management_context()
        key = generate(km, P256, pq=SOFT, classical=HSM)
        good = sign(ctx, P256, key, message)
        other = sign(ctx, P256, key, b"another message")
        assert verify(ctx, P256, key, message, good)
        flipped_mldsa = bytes([good[0] ^ 1]) + good[1:]
        flipped_ecdsa = good[:-1] + bytes([good[-1] ^ 1])
        assert not verify(ctx, P256, key, message, flipped_mldsa)
        assert not verify(ctx, P256, key, message, flipped_ecdsa)
        # each half valid on its own, but for another message
        assert not verify(ctx, P256, key, message, good[:MLDSA65_SIGNATURE] + other[MLDSA65_SIGNATURE:])
        assert not verify(ctx, P256, key, message, other[:MLDSA65_SIGNATURE] + good[MLDSA65_SIGNATURE:])
        for impossible in (b"", good[:MLDSA65_SIGNATURE], good + bytes(80)):
            assert not verify(ctx, P256, key, message, impossible)
        # a key of another draw: its halves must not verify this key's signature
        stranger = generate(km, P256, pq=SOFT, classical=HSM)
        assert not verify(ctx, P256, stranger, message, good)
        outcomes = [r for r in audit(tmp_path) if r["action"] == "key.use" and r["operation"] == "verify"]
        assert [r["result"] for r in outcomes].count("ok") == 1
        assert all(r["providers"] == [SOFT, HSM] for r in outcomes)


def test_signatures_made_with_pyca_halves_verify_under_a_split_public_key(
    tmp_path: Path, softhsm_token: Any
) -> None:
    """The other direction of interop: pyca signs each half over M', the split key (ML-DSA
    public key on openssl, ECDSA public key in the token) verifies."""
    message, context = b"signed outside", b"ctx"
    seed = os.urandom(32)
    mldsa_private = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed)
    ec_private = ec.generate_private_key(ec.SECP256R1())
    represented = m_prime(P256, message, context)
    signature = mldsa_private.sign(represented, LABELS[P256]) + ec_private.sign(
        represented, ec.ECDSA(hashes.SHA256())
    )
    public = mldsa_private.public_key().public_bytes_raw() + ec_private.public_key().public_bytes(
        ser.Encoding.X962, ser.PublicFormat.UncompressedPoint
    )
    with (
        DaemonProcess(tmp_path / "d", config(softhsm_token, tmp_path)) as daemon,
        daemon.stack() as stack,
        stack.create_crypto_context() as ctx,
    ):
        km = ctx.create_key_management_context()
        key = km.import_key(
            cs.ImportKeyParams()
            .set_algorithm(P256)
            .set_material(public, F.RAW)
            .set_component_providers(pq=SOFT, classical=HSM)
        )
        assert [c["provider"] for c in key.components] == [SOFT, HSM]
        assert key.permitted_operations == P.VERIFY  # a public key alone
        assert verify(ctx, P256, key, message, signature, context)
        assert not verify(ctx, P256, key, message, signature)
        with pytest.raises(cs.CryptoError) as err:
            sign(ctx, P256, key, message)
        assert err.value.code is cs.ErrorCode.KEY_OPERATION_NOT_PERMITTED


def test_explain_and_audit_name_both_halves(tmp_path: Path, softhsm_token: Any) -> None:
    with (
        DaemonProcess(tmp_path / "d", config(softhsm_token, tmp_path)) as daemon,
        daemon.stack() as stack,
        stack.create_crypto_context() as ctx,
    ):
        km = ctx.create_key_management_context()
        key = generate(km, ED, pq=SOFT, classical=HSM)
        explained = stack.explain(ED, "sign", key=key)
        assert [(c["role"], c["provider"], c["taken"]) for c in explained] == [
            ("pq", SOFT, True),
            ("classical", HSM, True),
            ("combiner", 0, True),
        ]
        assert "home provider" in explained[1]["reason"]
        assert "M'" in explained[2]["reason"]
        # a new key: native on openssl unless a split is asked for
        native = stack.explain(ED, "generate_key")
        assert [(c["role"], c["provider"], c["taken"]) for c in native] == [
            ("native", SOFT, True),
            ("native", HSM, False),
        ]
        split = stack.explain(ED, "generate_key", components={"classical": [HSM]})
        assert [(c["role"], c["provider"], c["taken"]) for c in split] == [
            ("pq", SOFT, True),
            ("pq", HSM, False),
            ("classical", HSM, True),
            ("combiner", 0, True),
        ]
        assert "ML-DSA-65" in split[1]["reason"]  # the token has no ML-DSA
        message = b"audited once"
        signature = sign(ctx, ED, key, message)
        assert verify(ctx, ED, key, message, signature)
    records = audit(tmp_path)
    generated = [r for r in records if r["action"] == "key.generate"]
    assert len(generated) == 1 and generated[0]["providers"] == [SOFT, HSM]
    assert generated[0]["provider"] == SOFT and generated[0]["algorithm"] == ED
    assert "classical Ed25519 on provider 5" in generated[0]["detail"]
    uses = [r for r in records if r["action"] == "key.use"]
    assert [(r["operation"], r["result"]) for r in uses] == [("sign", "ok"), ("verify", "ok")]
    for record in uses:
        assert record["providers"] == [SOFT, HSM] and record["provider"] == SOFT
        assert "pq ML-DSA-65 on openssl (2)" in record["detail"]
        assert "classical Ed25519 on pkcs11 (5)" in record["detail"]


def lost_or_down(error: cs.CryptoError) -> bool:
    """PROVIDER_UNAVAILABLE; or, while the token's worker is between two failed restarts
    (DEGRADED for that moment), the half's session key reported lost with the worker."""
    return error.code is cs.ErrorCode.PROVIDER_UNAVAILABLE or (
        error.code is cs.ErrorCode.PROVIDER_ERROR and "restarted" in error.message
    )


def fails_down(attempt: Any) -> cs.CryptoError | None:
    """The PROVIDER_UNAVAILABLE error ``attempt`` fails with; None (try again) when it met
    the moment a restart attempt was under way; anything else -- a result above all -- is
    a test failure."""
    with pytest.raises(cs.CryptoError) as err:
        attempt()
    assert lost_or_down(err.value), err.value
    return err.value if err.value.code is cs.ErrorCode.PROVIDER_UNAVAILABLE else None


def test_a_half_whose_provider_is_down_fails_the_whole_key(tmp_path: Path, softhsm_token: Any) -> None:
    """The token goes away (its worker dies and cannot start again): signing with the split
    key is PROVIDER_UNAVAILABLE -- never a signature of the ML-DSA half alone -- and so is
    making a new key whose classical half may only go there; keys held whole on openssl
    keep working."""
    message = b"not without both halves"
    with (
        DaemonProcess(tmp_path / "d", config(softhsm_token, tmp_path)) as daemon,
        daemon.stack() as stack,
        stack.create_crypto_context() as ctx,
    ):
        km = ctx.create_key_management_context()
        key = generate(km, P256, pq=SOFT, classical=HSM)
        native = generate(km, P256)
        assert native.components == [] and native.provider == SOFT
        signature = sign(ctx, P256, key, message)
        pending = ctx.create_sign_context(cs.SignContextConfig().set_algorithm(P256).set_key(key))
        pending.init()
        pending.update(message)

        worker = {p["id"]: p for p in stack.status()["providers"]}[HSM]["worker_pid"]
        os.rename(softhsm_token.tokendir, softhsm_token.tokendir.with_name("gone"))
        os.kill(worker, signal.SIGKILL)
        assert wait_for_exit(worker, 30)
        eventually(
            lambda: {p["id"]: p for p in stack.status()["providers"]}[HSM]["state"] == "unavailable",
            30,
            "the token provider reported down",
        )

        with pytest.raises(cs.CryptoError) as err:  # the message in progress: no signature
            pending.sign_finalize()
        assert lost_or_down(err.value)
        for attempt in (
            lambda: sign(ctx, P256, key, message),
            lambda: verify(ctx, P256, key, message, signature),
            lambda: generate(km, P256, classical=HSM),
        ):
            down = eventually(partial(fails_down, attempt), 30, "PROVIDER_UNAVAILABLE")
            assert "never runs on one half alone" in down.message
        explained = stack.explain(P256, "sign", key=key)
        assert [(c["role"], c["taken"]) for c in explained] == [
            ("pq", True),
            ("classical", False),
            ("combiner", False),
        ]
        assert explained[1]["reason"].startswith("unavailable")
        # both halves on openssl: unaffected
        assert verify(ctx, P256, native, message, sign(ctx, P256, native, message))


def test_both_halves_on_one_provider(tmp_path: Path, softhsm_token: Any) -> None:
    """Native keys stay as they were; a split with both roles on one provider also works
    (the daemon joins two openssl keys); a native key's public key imported split verifies
    what the native key signed."""
    message = b"one provider"
    with (
        DaemonProcess(tmp_path / "d", config(softhsm_token, tmp_path)) as daemon,
        daemon.stack() as stack,
        stack.create_crypto_context() as ctx,
    ):
        km = ctx.create_key_management_context()
        native = generate(km, P256)
        assert native.components == [] and native.provider == SOFT
        with ctx.create_sign_context(cs.SignContextConfig().set_algorithm(P256).set_key(native)) as signer:
            signature = signer.sign(message)
            assert signer.components == [] and signer.provider == SOFT
        same = generate(km, P256, pq=SOFT, classical=SOFT)
        assert [c["provider"] for c in same.components] == [SOFT, SOFT]
        public = km.export_public_key(native, F.SPKI_DER)
        assert verify(ctx, P256, native, message, signature)
        assert verify(ctx, P256, same, message, sign(ctx, P256, same, message))
        assert not verify(ctx, P256, same, message, signature)
        # the native key's public key imported split verifies its signatures
        split_public = km.import_key(
            cs.ImportKeyParams()
            .set_algorithm(P256)
            .set_material(public, F.SPKI_DER)
            .set_component_providers(pq=SOFT, classical=HSM)
        )
        assert verify(ctx, P256, split_public, message, signature)


def test_what_cannot_be_split_says_why(tmp_path: Path, softhsm_token: Any) -> None:
    with (
        DaemonProcess(tmp_path / "d", config(softhsm_token, tmp_path)) as daemon,
        daemon.stack() as stack,
        stack.create_crypto_context() as ctx,
    ):
        km = ctx.create_key_management_context()
        table = {e["name"]: e for e in stack.algorithms()}
        assert table["X-Wing"]["split"]["splittable"] is False
        assert "seed" in table["X-Wing"]["split"]["reason"]
        assert table["ML-DSA-87-Ed448-SHAKE256"]["split"]["splittable"] is False
        assert table[P256]["split"]["components"] == [
            {"role": "pq", "key_algorithm": "ML-DSA-65", "algorithm": "ML-DSA-65"},
            {"role": "classical", "key_algorithm": "ECDSA-P256", "algorithm": "ECDSA-P256"},
        ]
        rsa = table["ML-DSA-65-RSA3072-PSS-SHA512"]["split"]["components"][1]
        assert rsa == {"role": "classical", "key_algorithm": "RSA-3072", "algorithm": "RSA-PSS-SHA256"}
        listing = subprocess.run(
            [sys.executable, "-m", "cryptostack_core", "algorithms", "--endpoint", daemon.endpoint],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.splitlines()
        rows = {line.split()[0]: line for line in listing[1:]}
        assert "split: pq ML-DSA-65 + classical ECDSA-P256" in rows[P256]
        assert "split: no (one provider holds both)" in rows["X-Wing"]
        assert "split:" not in rows["ECDSA-P256"]
        for algorithm, why in (
            ("X-Wing", "seed"),
            ("ML-DSA-87-Ed448-SHAKE256", "Ed448"),
            ("ML-DSA-65-RSA3072-PKCS15-SHA512", "no standalone"),
        ):
            params = cs.GenerateKeyParams().set_algorithm(algorithm).set_placement("split")
            with pytest.raises(cs.CryptoError) as err:
                km.generate_key(params)
            assert err.value.code is cs.ErrorCode.INVALID_ARGUMENT
            assert why in err.value.message
            explained = stack.explain(algorithm, "generate_key", placement="split")
            assert [(c["role"], c["taken"]) for c in explained] == [("split", False)]
        # the token holds no ML-DSA: the pq half cannot go there
        with pytest.raises(cs.CryptoError) as err:
            generate(km, P256, pq=HSM)
        assert err.value.code is cs.ErrorCode.NO_COMPATIBLE_PROVIDER
        assert "pq half" in err.value.message
        # pinning one provider and naming the halves' providers contradict each other
        with pytest.raises(cs.CryptoError) as err:
            km.generate_key(
                cs.GenerateKeyParams()
                .set_algorithm(P256)
                .set_provider(SOFT)
                .set_component_providers(classical=HSM)
            )
        assert err.value.code is cs.ErrorCode.INVALID_ARGUMENT
        # placement applies to hybrid keys only
        with pytest.raises(cs.CryptoError) as err:
            km.generate_key(cs.GenerateKeyParams().set_algorithm("ECDSA-P256").set_placement("split"))
        assert err.value.code is cs.ErrorCode.INVALID_ARGUMENT


def test_exporting_a_split_key_needs_export_on_the_whole(tmp_path: Path, softhsm_token: Any) -> None:
    """Without EXPORT the halves are created non-extractable and nothing leaves; with it
    the composite private key is reassembled from both providers and reloads natively
    into the same public key."""
    with (
        DaemonProcess(tmp_path / "d", config(softhsm_token, tmp_path)) as daemon,
        daemon.stack() as stack,
        stack.create_crypto_context() as ctx,
    ):
        km = ctx.create_key_management_context()
        sealed = generate(km, P256, pq=SOFT, classical=HSM)
        with pytest.raises(cs.CryptoError) as err:
            km.export_key(sealed)
        assert err.value.code is cs.ErrorCode.KEY_OPERATION_NOT_PERMITTED
        params = (
            cs.GenerateKeyParams()
            .set_algorithm(P256)
            .set_permissions(P.SIGN | P.VERIFY | P.EXPORT)
            .set_component_providers(pq=SOFT, classical=HSM)
        )
        key = km.generate_key(params)
        pkcs8 = km.export_key(key, F.PKCS8_DER)
        raw = km.export_key(key, F.RAW)
        assert pkcs8.endswith(raw)
        reloaded = km.import_key(
            cs.ImportKeyParams()
            .set_algorithm(P256)
            .set_material(pkcs8, F.PKCS8_DER)
            .set_provider(SOFT)
            .set_permissions(P.SIGN | P.VERIFY)
        )
        assert km.export_public_key(reloaded, F.RAW) == km.export_public_key(key, F.RAW)
        message = b"exported and back"
        assert verify(ctx, P256, key, message, sign(ctx, P256, reloaded, message))


def test_auto_splits_when_no_provider_holds_the_whole(tmp_path: Path, softhsm_token: Any) -> None:
    """With liboqs (ML-DSA) and the token (ECDSA) but no provider claiming the composite,
    the default placement splits the key by itself, and explain shows why."""
    with (
        DaemonProcess(tmp_path / "d", config(softhsm_token, tmp_path, oqs=True, openssl=False)) as daemon,
        daemon.stack() as stack,
        stack.create_crypto_context() as ctx,
    ):
        km = ctx.create_key_management_context()
        explained = stack.explain(P256, "generate_key")
        assert [(c["role"], c["taken"]) for c in explained if c["role"] == "native"] == [
            ("native", False),
            ("native", False),
        ]
        assert [(c["role"], c["provider"]) for c in explained if c["taken"]] == [
            ("pq", OQS),
            ("classical", HSM),
            ("combiner", 0),
        ]
        key = generate(km, P256)
        assert [(c["role"], c["provider"]) for c in key.components] == [("pq", OQS), ("classical", HSM)]
        message = os.urandom(100)
        signature = sign(ctx, P256, key, message)
        assert verify(ctx, P256, key, message, signature)
        assert not verify(ctx, P256, key, message + b"!", signature)
        public = km.export_public_key(key, F.RAW)
    point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public[MLDSA65_PUBLIC:])
    point.verify(signature[MLDSA65_SIGNATURE:], m_prime(P256, message, b""), ec.ECDSA(hashes.SHA256()))


def split_slot_config(token: Any, tmp_path: Path) -> dict[str, Any]:
    halves = {"pq": [SOFT], "classical": [HSM]}
    return {
        **config(token, tmp_path),
        "key_slots": [
            {
                "name": "HybridSigner",
                "algorithm": P256,
                "components": halves,
                "permissions": ["sign", "verify"],
                "provision": "generate",
            },
            {"name": "HybridTarget", "algorithm": ED, "components": halves},
            {"name": "Whole", "algorithm": ED, "provider": SOFT},
        ],
    }


def test_split_slots_keep_each_half_with_its_provider(
    tmp_path: Path, softhsm_token: Any, list_token_objects: Callable[[Any], list[dict[str, Any]]]
) -> None:
    """A slot provisioned split keeps its ECDSA half as a token object and its ML-DSA half
    wrapped in the key store, one version over both; it survives a daemon crash (the token's
    reconciliation keeps the half the slot names), rotates, retires (the token object goes
    once unused) and clears; persisting refuses a key held the other way."""
    message = b"persisted apart"

    def token_labels() -> list[str]:
        return sorted(o["label"] for o in list_token_objects(softhsm_token))

    daemon = DaemonProcess(tmp_path / "d", split_slot_config(softhsm_token, tmp_path))
    with daemon:
        assert token_labels() == ["cryptostack:HybridSigner"] * 2  # the ECDSA pair only
        with daemon.stack() as stack, stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            signer_slot = ctx.resolve_resource("HybridSigner", cs.ResourceType.KEY_SLOT)
            info = km.get_key_slot_info(signer_slot)
            assert info.status is cs.KeySlotStatus.OCCUPIED and info.placement == "split"
            assert info.provider == 0 and info.version == 1
            assert info.components == [
                {"role": "pq", "provider": SOFT, "algorithm": "ML-DSA-65"},
                {"role": "classical", "provider": HSM, "algorithm": "ECDSA-P256"},
            ]
            loaded = km.load_key(signer_slot)
            assert [c["provider"] for c in loaded.components] == [SOFT, HSM]
            signature = sign(ctx, P256, signer_slot, message)
            public = km.export_public_key(signer_slot, F.RAW)

            # an ephemeral split key persisted, then rotated; older versions still verify
            target = ctx.resolve_resource("HybridTarget", cs.ResourceType.KEY_SLOT)
            first, second = (generate(km, ED, pq=SOFT, classical=HSM) for _ in range(2))
            signed = sign(ctx, ED, first, message)
            assert km.persist_key(target, first).version == 1
            assert km.persist_key(target, second).version == 2
            assert token_labels().count("cryptostack:HybridTarget") == 4
            assert verify(ctx, ED, km.load_key(target, 1), message, signed)
            assert verify(ctx, ED, target, message, sign(ctx, ED, second, message))
            assert not verify(ctx, ED, target, message, signed)  # the primary is the second
            held = km.load_key(target, 1)  # a user of version 1's token object
            assert held.version == 1 and [c["provider"] for c in held.components] == [SOFT, HSM]
            retired = km.retire_key_version(target, 1)
            assert [v.state for v in retired.versions] == [
                cs.KeyVersionState.RETIRED,
                cs.KeyVersionState.PRIMARY,
            ]
            with pytest.raises(cs.CryptoError) as err:
                km.load_key(target, 1)
            assert err.value.code is cs.ErrorCode.KEY_VERSION_RETIRED
            # still used: the token object stays, and the held key still verifies
            assert token_labels().count("cryptostack:HybridTarget") == 4
            assert verify(ctx, ED, held, message, signed)
            held.release()
            eventually(
                lambda: token_labels().count("cryptostack:HybridTarget") == 2,
                30,
                "the retired version's token object destroyed once unused",
            )

            # keys held one way do not go into slots that hold them the other way
            whole_slot = ctx.resolve_resource("Whole", cs.ResourceType.KEY_SLOT)
            for slot, key in ((whole_slot, first), (target, generate(km, ED))):
                with pytest.raises(cs.CryptoError) as err:
                    km.persist_key(slot, key)
                assert err.value.code is cs.ErrorCode.KEY_OPERATION_NOT_PERMITTED
        daemon.kill()  # a crash: the next start reconciles the token against the store
        daemon.start()
        assert token_labels().count("cryptostack:HybridSigner") == 2
        with daemon.stack() as stack, stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            signer_slot = ctx.resolve_resource("HybridSigner", cs.ResourceType.KEY_SLOT)
            info = km.get_key_slot_info(signer_slot)
            assert (
                info.placement == "split"
                and info.version == 1
                and [(c["role"], c["provider"]) for c in info.components]
                == [("pq", SOFT), ("classical", HSM)]
            )
            assert km.export_public_key(signer_slot, F.RAW) == public
            assert verify(ctx, P256, signer_slot, message, signature)
            again = sign(ctx, P256, signer_slot, message)
            point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public[MLDSA65_PUBLIC:])
            point.verify(again[MLDSA65_SIGNATURE:], m_prime(P256, message, b""), ec.ECDSA(hashes.SHA256()))
            # the asyncio client's plans carry the same slot info
            assert asyncio.run(async_slot_info(daemon, "HybridSigner")) == info

            # the command line rotates a split slot split, halves where the slot keeps them
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cryptostack_core",
                    "key",
                    "rotate",
                    "HybridSigner",
                    "--endpoint",
                    daemon.endpoint,
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            after = json.loads(done.stdout)["after"]
            assert after["version"] == 2 and after["placement"] == "split"
            assert after["components"] == info.components
            assert token_labels().count("cryptostack:HybridSigner") == 4
            assert verify(ctx, P256, signer_slot, message, sign(ctx, P256, signer_slot, message))
            assert verify(ctx, P256, km.load_key(signer_slot, 1), message, signature)

            km.clear_key_slot(signer_slot)
            eventually(
                lambda: "cryptostack:HybridSigner" not in token_labels(),
                30,
                "the cleared slot's token objects destroyed (both versions)",
            )
            with pytest.raises(cs.CryptoError) as err:
                km.load_key(signer_slot)
            assert err.value.code is cs.ErrorCode.SLOT_EMPTY
    persisted = [r for r in audit(tmp_path) if r["action"] == "key.persist"]
    assert [r["providers"] for r in persisted] == [[SOFT, HSM]] * 3
    assert "split: pq ML-DSA-65 on provider 2, classical Ed25519 on provider 5" in persisted[0]["detail"]


async def async_slot_info(daemon: DaemonProcess, name: str) -> cs.KeySlotInfo:
    config = cs.CryptoStackConfig().set_connection_endpoint(daemon.endpoint)
    async with cs.create_async_crypto_stack(config) as stack, stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        slot = await ctx.resolve_resource(name, cs.ResourceType.KEY_SLOT)
        return await km.get_key_slot_info(slot)


def store_rows(directory: Path) -> list[tuple[str, int, int, str]]:
    """(slot, version, provider, state) of every key-store row."""
    with sqlite3.connect(directory / "keystore.sqlite3") as db:
        return [
            tuple(r)
            for r in db.execute("SELECT name, version, provider, state FROM key_slots ORDER BY name, version")
        ]


@pytest.mark.parametrize("crash_at", ["provision", "persist", "delete"])
def test_a_crash_between_the_halves_and_the_slot_leaves_no_half_version(
    tmp_path: Path,
    softhsm_token: Any,
    crash_at: str,
    list_token_objects: Callable[[Any], list[dict[str, Any]]],
) -> None:
    """The daemon killed after the token persisted the classical half but before the
    version's row was written (while provisioning a slot at start, or persisting a key), or
    after a clear removed the rows but before the token objects were destroyed: the slot
    shows no version made of one half, and the next start destroys the token object no
    version names (audited); the slot then works as before."""
    directory = tmp_path / "d"
    base = split_slot_config(softhsm_token, tmp_path)
    name = "HybridSigner" if crash_at == "provision" else "HybridTarget"
    algorithm = P256 if crash_at == "provision" else ED
    if crash_at != "provision":
        base["key_slots"][0].pop("provision")
    message = b"after the crash"

    def labels() -> list[str]:
        return sorted(o["label"] for o in list_token_objects(softhsm_token))

    crashing_config = json.loads(json.dumps(base))
    hsm = next(p for p in crashing_config["providers"] if p["id"] == HSM)
    hsm["options"] = softhsm_token.options(test_crash_at="delete" if crash_at == "delete" else "persist")
    if crash_at == "delete":  # one version to clear
        with (
            DaemonProcess(directory, base) as daemon,
            daemon.stack() as stack,
            stack.create_crypto_context() as ctx,
        ):
            km = ctx.create_key_management_context()
            km.persist_key(
                ctx.resolve_resource(name, cs.ResourceType.KEY_SLOT), generate(km, ED, pq=SOFT, classical=HSM)
            )
        assert [r for r in store_rows(directory) if r[0] == name] == [(name, 1, 0, "active")]
    crashing = DaemonProcess(directory, crashing_config)
    if crash_at == "provision":
        with pytest.raises(RuntimeError, match="exited with -9"):
            crashing.start()  # killed while provisioning, before the slot's row
    else:
        with crashing, crashing.stack() as stack, stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            target = ctx.resolve_resource(name, cs.ResourceType.KEY_SLOT)
            key = generate(km, ED, pq=SOFT, classical=HSM)
            with pytest.raises(cs.CryptoError):  # the daemon dies under the call
                if crash_at == "persist":
                    km.persist_key(target, key)
                else:
                    km.clear_key_slot(target)
    assert [r for r in store_rows(directory) if r[0] == name] == []  # no half version
    assert labels().count(f"cryptostack:{name}") == 2  # the orphaned classical key pair
    with DaemonProcess(directory, base) as daemon:
        reconciled = [r for r in audit(tmp_path) if r["action"] == "key.reconcile"]
        assert [(r["resource"], r["provider"]) for r in reconciled] == [(f"cryptostack:{name}", HSM)]
        with daemon.stack() as stack, stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            target = ctx.resolve_resource(name, cs.ResourceType.KEY_SLOT)
            if crash_at == "provision":  # provisioned afresh at this start
                assert km.get_key_slot_info(target).version == 1
            else:
                assert "cryptostack:HybridTarget" not in labels()  # destroyed at start
                assert km.get_key_slot_info(target).status is cs.KeySlotStatus.EMPTY
                km.persist_key(target, generate(km, ED, pq=SOFT, classical=HSM))
            assert verify(ctx, algorithm, target, message, sign(ctx, algorithm, target, message))
        assert labels().count(f"cryptostack:{name}") == 2
