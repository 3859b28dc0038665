"""The oqs provider behind a real daemon, next to the openssl provider, through the public
API: selection and ``explain``, keys crossing providers, slots surviving a restart, KEM
secrets, exact signature sizes, and a slow SLH-DSA signature timing out without holding up
other contexts."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess

pytestmark = pytest.mark.liboqs

P = cs.KeyOperationPermission
OPENSSL, OQS = 2, 3
PROVIDERS = [{"name": "openssl", "id": OPENSSL, "options": {}}, {"name": "oqs", "id": OQS, "options": {}}]


def _sign(
    ctx: cs.CryptoContext,
    algorithm: str,
    key: object,
    message: bytes,
    context: bytes = b"",
    provider: int | None = None,
) -> bytes:
    config = cs.SignContextConfig().set_algorithm(algorithm).set_key(key)  # type: ignore[arg-type]
    if context:
        config.set_context(context)
    if provider is not None:
        config.set_provider(provider)
    with ctx.create_sign_context(config) as signer:
        signature: bytes = signer.sign(message)
    return signature


def _verify(
    ctx: cs.CryptoContext,
    algorithm: str,
    key: object,
    message: bytes,
    signature: bytes,
    context: bytes = b"",
    provider: int | None = None,
) -> bool:
    config = cs.VerifyContextConfig().set_algorithm(algorithm).set_key(key)  # type: ignore[arg-type]
    if context:
        config.set_context(context)
    if provider is not None:
        config.set_provider(provider)
    with ctx.create_verify_context(config) as verifier:
        ok: bool = verifier.verify(message, signature)
    return ok


def test_selection_explain_and_keys_crossing_providers(tmp_path: Path) -> None:
    config = {"daemon": {"provider_preference": [OQS, OPENSSL]}, "providers": PROVIDERS}
    with DaemonProcess(tmp_path, config) as daemon, daemon.stack() as stack:
        status = {p["id"]: p for p in stack.status()["providers"]}
        assert status[OQS]["state"] == "ready" and status[OQS]["liboqs_version"] == "0.16.0"
        assert "SLH-DSA-SHAKE-256s" in status[OQS]["algorithms"]
        # both offer ML-DSA-65: the preference order decides, and explain says so
        explained = stack.explain("ML-DSA-65", "generate_key")
        assert [(c["provider"], c["taken"]) for c in explained] == [(OQS, True), (OPENSSL, False)]
        assert "comes first" in explained[1]["reason"]
        falcon = stack.explain("Falcon-512", "sign")
        assert [(c["provider"], c["taken"]) for c in falcon] == [(OQS, True), (OPENSSL, False)]
        assert "does not support" in falcon[1]["reason"]
        with stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            for home, guest in ((OQS, OPENSSL), (OPENSSL, OQS)):
                pair = km.generate_key(cs.GenerateKeyParams().set_algorithm("ML-DSA-65").set_provider(home))
                spki = km.export_public_key(pair)
                public = km.import_key(
                    cs.ImportKeyParams()
                    .set_algorithm("ML-DSA-65")
                    .set_material(spki, cs.KeyFormat.SPKI_DER)
                    .set_provider(guest)
                )
                signature = _sign(ctx, "ML-DSA-65", pair, b"hello", b"ctx")
                assert _verify(ctx, "ML-DSA-65", public, b"hello", signature, b"ctx", guest)
                assert not _verify(ctx, "ML-DSA-65", public, b"hellO", signature, b"ctx", guest)
                assert km.export_public_key(public) == spki
            # unpinned generation lands on the preferred provider
            pair = km.generate_key(cs.GenerateKeyParams().set_algorithm("ML-DSA-65"))
            with ctx.create_sign_context(
                cs.SignContextConfig().set_algorithm("ML-DSA-65").set_key(pair)
            ) as signer:
                assert signer.provider == OQS and signer.get_signature_size() == 3309


def test_slots_on_oqs_survive_a_restart(tmp_path: Path) -> None:
    config = {
        "providers": PROVIDERS,
        "key_slots": [
            {
                "name": "PqSign",
                "algorithm": "ML-DSA-65",
                "provider": OQS,
                "permissions": ["sign", "verify"],
                "provision": "generate",
            },
            {
                "name": "HashSign",
                "algorithm": "SLH-DSA-SHA2-128f",
                "provider": OQS,
                "permissions": ["sign", "verify"],
                "provision": "generate",
            },
            {
                "name": "PqKem",
                "algorithm": "ML-KEM-768",
                "provider": OQS,
                "permissions": ["encapsulate", "decapsulate"],
                "provision": "generate",
            },
            {
                "name": "FalconSlot",
                "algorithm": "Falcon-512",
                "provider": OQS,
                "permissions": ["sign", "verify"],
            },
        ],
    }
    with DaemonProcess(tmp_path, config) as daemon:
        with daemon.stack() as stack, stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            slots = {
                n: ctx.resolve_resource(n, cs.ResourceType.KEY_SLOT)
                for n in ("PqSign", "HashSign", "PqKem", "FalconSlot")
            }
            publics = {
                n: km.export_public_key(slots[n], cs.KeyFormat.RAW) for n in ("PqSign", "HashSign", "PqKem")
            }
            signatures = {
                n: _sign(ctx, alg, slots[n], b"before", b"app")
                for n, alg in (("PqSign", "ML-DSA-65"), ("HashSign", "SLH-DSA-SHA2-128f"))
            }
            kem = ctx.create_kem_context(
                cs.KemContextConfig()
                .set_algorithm("ML-KEM-768")
                .set_key(slots["PqKem"])
                .set_derived_key_permissions(P.DERIVE | P.EXPORT)
            )
            ciphertext, secret = kem.encapsulate()
            shared = km.export_key(secret)
            falcon = km.generate_key(cs.GenerateKeyParams().set_algorithm("Falcon-512").set_provider(OQS))
            km.persist_key(slots["FalconSlot"], falcon)
            falcon_public = km.export_public_key(falcon, cs.KeyFormat.RAW)
            info = km.get_key_slot_info(slots["FalconSlot"])
            assert info.status is cs.KeySlotStatus.OCCUPIED and info.provider == OQS
            with pytest.raises(cs.CryptoError) as exc:
                km.export_key(slots["PqSign"])  # no EXPORT: the secret stays in the daemon
            assert exc.value.code is cs.ErrorCode.KEY_OPERATION_NOT_PERMITTED
        daemon.stop()
        daemon.start()
        with daemon.stack() as stack, stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            slots = {
                n: ctx.resolve_resource(n, cs.ResourceType.KEY_SLOT)
                for n in ("PqSign", "HashSign", "PqKem", "FalconSlot")
            }
            for n, alg in (("PqSign", "ML-DSA-65"), ("HashSign", "SLH-DSA-SHA2-128f")):
                assert km.export_public_key(slots[n], cs.KeyFormat.RAW) == publics[n]
                assert _verify(ctx, alg, slots[n], b"before", signatures[n], b"app")
                fresh = _sign(ctx, alg, slots[n], b"after", b"app")
                assert _verify(ctx, alg, slots[n], b"after", fresh, b"app")
            kem = ctx.create_kem_context(
                cs.KemContextConfig()
                .set_algorithm("ML-KEM-768")
                .set_key(slots["PqKem"])
                .set_derived_key_permissions(P.DERIVE | P.EXPORT)
            )
            assert km.export_key(kem.decapsulate(ciphertext)) == shared
            assert km.export_public_key(slots["FalconSlot"], cs.KeyFormat.RAW) == falcon_public
            signature = _sign(ctx, "Falcon-512", slots["FalconSlot"], b"falcon")
            assert _verify(ctx, "Falcon-512", slots["FalconSlot"], b"falcon", signature)
    # outside the daemon, pyca agrees with the slot's ML-DSA key and signature
    public = mldsa.MLDSA65PublicKey.from_public_bytes(publics["PqSign"])
    public.verify(signatures["PqSign"], b"before", b"app")


def test_kem_secrets_and_sizes_through_the_api(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path, {"providers": PROVIDERS}) as daemon, daemon.stack() as stack:
        with stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            seed = os.urandom(64)
            pair = km.import_key(
                cs.ImportKeyParams()
                .set_algorithm("ML-KEM-1024")
                .set_material(seed, cs.KeyFormat.SEED)
                .set_provider(OQS)
            )
            reference = mlkem.MLKEM1024PrivateKey.from_seed_bytes(seed)
            loaded = ser.load_der_public_key(km.export_public_key(pair))
            assert isinstance(loaded, mlkem.MLKEM1024PublicKey)
            assert loaded.public_bytes_raw() == reference.public_key().public_bytes_raw()
            kem = ctx.create_kem_context(
                cs.KemContextConfig()
                .set_algorithm("ML-KEM-1024")
                .set_key(pair)
                .set_derived_key_permissions(P.DERIVE | P.EXPORT)
            )
            assert kem.provider == OQS  # type: ignore[attr-defined]
            ciphertext, ours = kem.encapsulate()
            assert km.export_key(ours) == reference.decapsulate(ciphertext)
            secret, theirs = reference.public_key().encapsulate()
            assert km.export_key(kem.decapsulate(theirs)) == secret
            quiet = ctx.create_kem_context(cs.KemContextConfig().set_algorithm("ML-KEM-1024").set_key(pair))
            _, hidden = quiet.encapsulate()
            with pytest.raises(cs.CryptoError) as exc:
                km.export_key(hidden)  # default derived permissions: DERIVE only
            assert exc.value.code is cs.ErrorCode.KEY_OPERATION_NOT_PERMITTED
            with pytest.raises(cs.CryptoError) as exc:
                kem.decapsulate(ciphertext[:-1])
            assert exc.value.code is cs.ErrorCode.INVALID_ARGUMENT
            for algorithm, size in (
                ("Falcon-512", 752),
                ("SLH-DSA-SHA2-128s", 7856),
                ("SLH-DSA-SHAKE-256f", 49856),
                ("ML-DSA-87", 4627),
            ):
                key = km.generate_key(cs.GenerateKeyParams().set_algorithm(algorithm).set_provider(OQS))
                with ctx.create_sign_context(
                    cs.SignContextConfig().set_algorithm(algorithm).set_key(key)
                ) as signer:
                    assert signer.get_signature_size() == size


def test_slow_signature_times_out_without_blocking_others(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path, {"providers": PROVIDERS}) as daemon, daemon.stack() as stack:
        with stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            slow_key = km.generate_key(
                cs.GenerateKeyParams().set_algorithm("SLH-DSA-SHAKE-192s").set_provider(OQS)
            )
            fast_key = km.generate_key(cs.GenerateKeyParams().set_algorithm("ML-DSA-65").set_provider(OQS))
            slow = ctx.create_sign_context(
                cs.SignContextConfig()
                .set_algorithm("SLH-DSA-SHAKE-192s")
                .set_key(slow_key)
                .set_operation_timeout(0.2)
            )
            started = time.monotonic()
            with pytest.raises(cs.CryptoError) as exc:
                slow.sign(b"this takes over a second")
            assert exc.value.code is cs.ErrorCode.OPERATION_TIMED_OUT
            assert time.monotonic() - started < 20  # the client's deadline, not the signature
            # While another client's SLH-DSA signature runs in the daemon (no deadline),
            # this client's contexts on the same provider keep being served: many ML-DSA
            # signatures complete before the slow one does (a provider lock would allow ~1).
            signing, done = threading.Event(), threading.Event()

            def other_client() -> None:
                with daemon.stack() as other, other.create_crypto_context() as octx:
                    key = octx.create_key_management_context().generate_key(
                        cs.GenerateKeyParams().set_algorithm("SLH-DSA-SHAKE-192s").set_provider(OQS)
                    )
                    signing.set()
                    _sign(octx, "SLH-DSA-SHAKE-192s", key, b"slow, in another client")
                done.set()

            thread = threading.Thread(target=other_client)
            thread.start()
            assert signing.wait(60)
            served = 0
            while not done.is_set():
                signature = _sign(ctx, "ML-DSA-65", fast_key, b"meanwhile")
                assert _verify(ctx, "ML-DSA-65", fast_key, b"meanwhile", signature)
                served += 1
            thread.join(60)
            assert served >= 5, served
            with pytest.raises(cs.CryptoError) as exc:
                slow.sign(b"again")
            assert exc.value.code is cs.ErrorCode.CONTEXT_IN_ERROR_STATE
            slow.close()
            # with enough time, the same algorithm signs fine
            signature = _sign(ctx, "SLH-DSA-SHAKE-192s", slow_key, b"patience")
            assert _verify(ctx, "SLH-DSA-SHAKE-192s", slow_key, b"patience", signature)
