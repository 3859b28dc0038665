"""The PKCS#11 provider behind a real daemon, through the public API: key slots living in the
token, provider selection with compatibility lists, persistence across daemon restarts, the
worker ending with the daemon. The contract every provider shares -- deadlines while the token
hangs (through the worker host's hang hook), every applicable vector file -- is checked by the
conformance kit (``test_pkcs11_conformance.py``)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.waiting import eventually, wait_for_exit

P = cs.KeyOperationPermission
HSM, SOFT = 5, 2
ENC, DEC = cs.CipherDirection.ENCRYPT, cs.CipherDirection.DECRYPT


def daemon_config(token: Any, **options: Any) -> dict[str, Any]:
    def slot(name: str, algorithm: str, permissions: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "algorithm": algorithm,
            "provider": HSM,
            "compatible_providers": [HSM, SOFT],
            "permissions": permissions,
            **extra,
        }

    return {
        "providers": [
            {"name": "openssl", "id": SOFT, "options": {}},
            {"name": "pkcs11", "id": HSM, "options": token.options(**options)},
        ],
        "key_slots": [
            slot("HsmAes", "AES-256", ["encrypt", "decrypt"], provision="generate"),
            slot("HsmEc", "ECDSA-P256", ["sign", "verify", "agree"], provision="generate"),
            slot(
                "HsmEcExportable", "ECDSA-P256", ["sign", "verify", "agree", "export"], provision="generate"
            ),
            {
                "name": "HsmMac",
                "algorithm": "HMAC-SHA-256",
                "provider": HSM,
                "compatible_providers": [HSM],
                "permissions": ["mac"],
            },
        ],
    }


def test_slots_live_in_the_token(
    tmp_path: Path, softhsm_token: Any, list_token_objects: Callable[[Any], list[dict[str, Any]]]
) -> None:
    iv, message = os.urandom(12), b"kept in the HSM"
    with DaemonProcess(tmp_path / "d", daemon_config(softhsm_token)) as daemon:
        labels = sorted(o["label"] for o in list_token_objects(softhsm_token))
        assert labels == [
            "cryptostack:HsmAes",
            "cryptostack:HsmEc",
            "cryptostack:HsmEc",
            "cryptostack:HsmEcExportable",
            "cryptostack:HsmEcExportable",
        ]
        with daemon.stack() as stack, stack.create_crypto_context() as ctx:
            status = {p["id"]: p for p in stack.status()["providers"]}
            assert status[HSM]["state"] == "ready"
            assert status[HSM]["token_label"] == softhsm_token.label
            aes = ctx.resolve_resource("HsmAes", cs.ResourceType.KEY_SLOT)
            km = ctx.create_key_management_context()
            info = km.get_key_slot_info(aes)
            assert info.provider == HSM and info.compatible_providers == [HSM, SOFT]
            enc = ctx.create_cipher_context(
                cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(aes).set_direction(ENC)
            )
            enc.init(iv)
            sealed = enc.update(message) + enc.finalize()
            assert enc.provider == HSM  # the slot's home provider runs it: in the token
            with pytest.raises(cs.CryptoError) as err:  # no EXPORT: the material stays
                km.export_key(km.load_key(aes))
            assert err.value.code is cs.ErrorCode.KEY_OPERATION_NOT_PERMITTED

            # ECDSA in the token; the signature verifies in pyca
            ec_slot = ctx.resolve_resource("HsmEc", cs.ResourceType.KEY_SLOT)
            signer = ctx.create_sign_context(
                cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(ec_slot)
            )
            signature = signer.sign(b"signed in the token")
            assert signer.provider == HSM
            public = ser.load_der_public_key(km.export_public_key(ec_slot))
            assert isinstance(public, ec.EllipticCurvePublicKey)
            public.verify(signature, b"signed in the token", ec.ECDSA(hashes.SHA256()))

            # ECDH is not offered by the token; the key cannot leave it -> nobody can run it
            peer = ec.generate_private_key(ec.SECP256R1())
            peer_spki = peer.public_key().public_bytes(
                ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo
            )
            with pytest.raises(cs.CryptoError) as err:
                ctx.create_key_agreement_context(
                    cs.KeyAgreementContextConfig().set_algorithm("ECDH-P256").set_key(ec_slot)
                )
            assert err.value.code is cs.ErrorCode.NO_COMPATIBLE_PROVIDER
            # ...while an extractable key moves to the software provider (wrapped out of the
            # token), and the result matches pyca with the slot's public key
            movable = ctx.resolve_resource("HsmEcExportable", cs.ResourceType.KEY_SLOT)
            agreement = ctx.create_key_agreement_context(
                cs.KeyAgreementContextConfig()
                .set_algorithm("ECDH-P256")
                .set_key(movable)
                .set_derived_key_permissions(P.DERIVE | P.EXPORT)
            )
            assert agreement.provider == SOFT
            shared = km.export_key(agreement.agree(peer_spki))
            slot_public = ser.load_der_public_key(km.export_public_key(movable))
            assert isinstance(slot_public, ec.EllipticCurvePublicKey)
            assert shared == peer.exchange(ec.ECDH(), slot_public)
            signer = ctx.create_sign_context(
                cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(movable)
            )
            signer.sign(b"x")
            assert signer.provider == HSM  # signing stays on the home provider

            # an ephemeral key generated in the token, persisted into an empty slot
            mac_slot = ctx.resolve_resource("HsmMac", cs.ResourceType.KEY_SLOT)
            eph = km.generate_key(
                cs.GenerateKeyParams().set_algorithm("HMAC-SHA-256").set_permissions(P.MAC).set_provider(HSM)
            )
            km.persist_key(mac_slot, eph)
            tag = ctx.create_sign_context(
                cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(eph)
            ).sign(b"mac me")
        daemon.stop()
        daemon.start()  # new daemon, new token worker: slots are found again by reference
        with daemon.stack() as stack, stack.create_crypto_context() as ctx:
            aes = ctx.resolve_resource("HsmAes", cs.ResourceType.KEY_SLOT)
            dec = ctx.create_cipher_context(
                cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(aes).set_direction(DEC)
            )
            dec.init(iv)
            assert dec.update(sealed) == b"" and dec.finalize() == message
            assert dec.provider == HSM
            mac_slot = ctx.resolve_resource("HsmMac", cs.ResourceType.KEY_SLOT)
            verifier = ctx.create_verify_context(
                cs.VerifyContextConfig().set_algorithm("HMAC-SHA-256").set_key(mac_slot)
            )
            assert verifier.verify(b"mac me", tag)
            assert not verifier.verify(b"mac me!", tag)
            # digests on the token equal the software provider's
            for algorithm in ("SHA-224", "SHA-256", "SHA-384", "SHA-512"):
                for data in (b"", b"abc", os.urandom(5000)):
                    digests = set()
                    for provider in (HSM, SOFT):
                        h = ctx.create_hash_context(
                            cs.HashContextConfig().set_algorithm(algorithm).set_provider(provider)
                        )
                        digests.add(h.single_shot(data))
                        assert h.provider == provider
                    name = algorithm.replace("-", "").lower()
                    assert digests == {hashlib.new(name, data).digest()}


def test_many_clients_at_once(tmp_path: Path, softhsm_token: Any) -> None:
    """Eight client connections, each with its own contexts, on the same token slots."""
    errors: list[BaseException] = []

    def client(daemon: DaemonProcess, n: int) -> None:
        try:
            with daemon.stack() as stack, stack.create_crypto_context() as ctx:
                aes = ctx.resolve_resource("HsmAes", cs.ResourceType.KEY_SLOT)
                ec_slot = ctx.resolve_resource("HsmEc", cs.ResourceType.KEY_SLOT)
                km = ctx.create_key_management_context()
                public = ser.load_der_public_key(km.export_public_key(ec_slot))
                assert isinstance(public, ec.EllipticCurvePublicKey)
                enc = ctx.create_cipher_context(
                    cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(aes).set_direction(ENC)
                )
                dec = ctx.create_cipher_context(
                    cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(aes).set_direction(DEC)
                )
                signer = ctx.create_sign_context(
                    cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(ec_slot)
                )
                hasher = ctx.create_hash_context(
                    cs.HashContextConfig().set_algorithm("SHA-256").set_provider(HSM)
                )
                for i in range(15):
                    msg = os.urandom(40 + i)
                    iv = os.urandom(12)
                    enc.init(iv)
                    sealed = enc.update(msg) + enc.finalize()
                    dec.init(iv)
                    assert dec.update(sealed) + dec.finalize() == msg
                    public.verify(signer.sign(msg), msg, ec.ECDSA(hashes.SHA256()))
                    assert hasher.single_shot(msg) == hashlib.sha256(msg).digest()
                assert {enc.provider, dec.provider, signer.provider, hasher.provider} == {HSM}
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    with DaemonProcess(tmp_path / "d", daemon_config(softhsm_token, sessions=4)) as daemon:
        threads = [threading.Thread(target=client, args=(daemon, n)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        with daemon.stack() as stack:
            hsm = next(p for p in stack.status()["providers"] if p["id"] == HSM)
    assert errors == []
    assert hsm["state"] == "ready" and hsm["worker_restarts"] == 0


def test_worker_ends_with_the_daemon(tmp_path: Path, softhsm_token: Any) -> None:
    """A daemon killed with SIGKILL leaves no token worker behind, even one stuck in a call."""
    config = daemon_config(softhsm_token, test_hang={"op": "digest"})
    daemon = DaemonProcess(tmp_path / "d", config).start()
    try:
        with daemon.stack(timeout=30) as stack:
            pid = next(p for p in stack.status()["providers"] if p["id"] == HSM)["worker_pid"]
            hasher = stack.create_crypto_context().create_hash_context(
                cs.HashContextConfig().set_algorithm("SHA-256").set_provider(HSM).set_operation_timeout(0.3)
            )
            with pytest.raises(cs.CryptoError) as err:
                hasher.single_shot(b"stuck")  # the worker now holds this call
            assert err.value.code is cs.ErrorCode.OPERATION_TIMED_OUT
    finally:
        daemon.kill()
    assert wait_for_exit(pid, 30), "the token worker outlived the daemon"


def test_stream_calls_reach_the_token_worker_without_a_thread(tmp_path: Path, softhsm_token: Any) -> None:
    """Hash, cipher, sign and verify calls on the token go from the client's socket to the
    worker's socket on the daemon's event loop: none of them is sent to a thread pool (only
    context creation and key management are). The daemon runs in this process so the test
    sees where each request went."""
    import asyncio
    import threading

    from cryptostack_core.sdk.workers import use_event_loop
    from cryptostack_core.server.config import DaemonConfig
    from cryptostack_core.server.daemon import DaemonServer

    config = DaemonConfig.from_mapping(
        {
            "daemon": {"socket": str(tmp_path / "d.sock"), "keystore": str(tmp_path / "ks.db")},
            "providers": [{"name": "pkcs11", "id": HSM, "options": softhsm_token.options()}],
        }
    )
    runner = asyncio.Runner()  # as run_daemon does: the loop first, given to the worker hosts
    use_event_loop(runner.get_loop())
    server = DaemonServer(config)
    threaded: list[str] = []
    provider_for = server.service.provider_for  # asked only for requests sent to a thread

    def recording(session: Any, request: Any) -> Any:
        threaded.extend(leaf.op for leaf in request.leaves())
        return provider_for(session, request)

    server.service.provider_for = recording  # type: ignore[method-assign]
    outcome: dict[str, Any] = {}

    def client() -> None:
        try:
            ready = eventually(lambda: (tmp_path / "d.sock").exists(), 60, "the socket")
            assert ready
            endpoint = f"unix://{tmp_path / 'd.sock'}"
            with (
                cs.create_crypto_stack(cs.CryptoStackConfig().set_connection_endpoint(endpoint)) as stack,
                stack.create_crypto_context() as ctx,
            ):
                km = ctx.create_key_management_context()
                aes = km.generate_key(
                    cs.GenerateKeyParams()
                    .set_algorithm("AES-256")
                    .set_permissions(P.ENCRYPT | P.DECRYPT)
                    .set_provider(HSM)
                )
                ec_key = km.generate_key(
                    cs.GenerateKeyParams()
                    .set_algorithm("ECDSA-P256")
                    .set_permissions(P.SIGN | P.VERIFY)
                    .set_provider(HSM)
                )
                hasher = ctx.create_hash_context(
                    cs.HashContextConfig().set_algorithm("SHA-256").set_provider(HSM)
                )
                outcome["digest"] = hasher.single_shot(b"abc")
                enc = ctx.create_cipher_context(
                    cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(aes).set_direction(ENC)
                )
                enc.init(bytes(12))
                enc.update_aad(b"aad")
                outcome["ciphertext"] = enc.update(b"secret") + enc.finalize()
                signer = ctx.create_sign_context(
                    cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(ec_key)
                )
                signature = signer.sign(b"message")
                verifier = ctx.create_verify_context(
                    cs.VerifyContextConfig().set_algorithm("ECDSA-P256").set_key(ec_key)
                )
                outcome["verified"] = verifier.verify(b"message", signature)
        except BaseException as exc:  # noqa: BLE001
            outcome["error"] = exc
        finally:
            server.stop()

    thread = threading.Thread(target=client)
    thread.start()
    try:
        runner.run(server.serve())  # in the main thread (signal handlers) until the client stops it
    finally:
        use_event_loop(None)
        runner.close()
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["digest"] == hashlib.sha256(b"abc").digest() and outcome["verified"]
    assert len(outcome["ciphertext"]) == len(b"secret") + 16
    stream_calls = {
        op
        for op in threaded
        if op.split(".")[0] in ("hash", "cipher", "sign", "verify") and not op.endswith(".create")
    }
    assert stream_calls == set(), f"sent to a thread pool: {sorted(stream_calls)}"
    assert "key.generate" in threaded  # key management still runs in the provider's pool


def test_inproc_stack_awaits_the_token_worker(tmp_path: Path, softhsm_token: Any) -> None:
    """``inproc://`` with a worker-hosted provider: stream calls are awaited on the worker
    host's loop (no thread of the transport's in between), with the same results and the
    same deadline handling as over the daemon."""
    config = {
        "daemon": {"keystore": str(tmp_path / "ks.db"), "state_dir": str(tmp_path / "s")},
        "providers": [
            {"name": "pkcs11", "id": HSM, "options": softhsm_token.options(test_hang={"op": "digest"})}
        ],
    }
    with (
        cs.create_crypto_stack(
            cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(config)
        ) as stack,
        stack.create_crypto_context() as ctx,
    ):
        km = ctx.create_key_management_context()
        aes = km.generate_key(
            cs.GenerateKeyParams()
            .set_algorithm("AES-256")
            .set_permissions(P.ENCRYPT | P.DECRYPT)
            .set_provider(HSM)
        )
        held = ctx.create_hash_context(
            cs.HashContextConfig().set_algorithm("SHA-256").set_provider(HSM).set_operation_timeout(0.3)
        )
        with pytest.raises(cs.CryptoError) as err:
            held.single_shot(b"held in the worker")  # only the deadline ends it
        assert err.value.code is cs.ErrorCode.OPERATION_TIMED_OUT
        with pytest.raises(cs.CryptoError) as err:
            held.single_shot(b"again")
        assert err.value.code is cs.ErrorCode.CONTEXT_IN_ERROR_STATE
        hasher = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256").set_provider(HSM))
        assert hasher.single_shot(b"abc") == hashlib.sha256(b"abc").digest()
        iv = os.urandom(12)
        enc = ctx.create_cipher_context(
            cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(aes).set_direction(ENC)
        )
        enc.init(iv)
        sealed = enc.update(b"through inproc") + enc.finalize()
        dec = ctx.create_cipher_context(
            cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(aes).set_direction(DEC)
        )
        dec.init(iv)
        assert dec.update(sealed) + dec.finalize() == b"through inproc"
