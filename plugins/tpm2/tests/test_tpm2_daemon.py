"""End to end through the public API over a real daemon whose tpm2 provider drives a swtpm.

Each test owns its simulator: the daemon's TPM worker is that simulator's only client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptostack_tpm2.testing import Swtpm

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess

PROVIDER_ID = 5
P = cs.KeyOperationPermission


def _config(sim: Swtpm, **options: Any) -> dict[str, Any]:
    return {
        "providers": [
            {
                "name": "tpm2",
                "id": PROVIDER_ID,
                "options": {"tcti": sim.tcti, "reset_lockout": True, **options},
            }
        ],
        "key_slots": [
            {
                "name": "DeviceKey",
                "algorithm": "ECDSA-P256",
                "provider": PROVIDER_ID,
                "permissions": ["sign", "verify"],
                "provision": "generate",
            }
        ],
    }


def _sign(ctx: cs.CryptoContext, key: Any, message: bytes) -> bytes:
    with ctx.create_sign_context(cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(key)) as signer:
        signer.init()
        signer.update(message)
        signature: bytes = signer.sign_finalize()
        return signature


def _device_key(stack: cs.CryptoStack) -> tuple[bytes, bytes]:
    """(SPKI, a signature over b"device") made with the slot's TPM key."""
    with stack.create_crypto_context() as ctx:
        slot = ctx.resolve_resource("DeviceKey", cs.ResourceType.KEY_SLOT)
        km = ctx.create_key_management_context(cs.KeyManagementContextConfig())
        info = km.get_key_slot_info(slot)
        assert info.status is cs.KeySlotStatus.OCCUPIED and info.provider == PROVIDER_ID
        with km.load_key(slot) as key:
            return km.export_public_key(key), _sign(ctx, key, b"device")


def _check(spki: bytes, signature: bytes, message: bytes = b"device") -> None:
    public = serialization.load_der_public_key(spki)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, message, ec.ECDSA(hashes.SHA256()))


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Swtpm]:
    simulator = Swtpm(tmp_path / "swtpm").start()
    yield simulator
    simulator.stop()


def test_tpm_slot_key_survives_daemon_and_tpm_restart(sim: Swtpm, tmp_path: Path) -> None:
    config = _config(sim)
    config["daemon"] = {"kek_provider": PROVIDER_ID}  # key store KEK sealed to the TPM
    daemon = DaemonProcess(tmp_path / "daemon", config)
    with daemon:
        with daemon.stack() as stack:
            spki, signature = _device_key(stack)
            _check(spki, signature)
            status = stack.status()
            assert "tpm2" in str(status)
    sim.restart()  # same state directory
    with daemon:
        with daemon.stack() as stack:
            spki_again, signature = _device_key(stack)
    assert spki_again == spki
    _check(spki, signature)


def test_key_store_sealed_to_another_tpm_does_not_open(sim: Swtpm, tmp_path: Path) -> None:
    config = _config(sim)
    config["daemon"] = {"kek_provider": PROVIDER_ID}
    with DaemonProcess(tmp_path / "daemon", config) as daemon, daemon.stack() as stack:
        _device_key(stack)
    other = Swtpm(tmp_path / "other").start()  # a fresh TPM: another storage hierarchy
    try:
        moved = _config(other)
        moved["daemon"] = {"kek_provider": PROVIDER_ID}
        copy = DaemonProcess(tmp_path / "daemon", moved, start_timeout=20)
        with pytest.raises(RuntimeError) as err:
            copy.start()
        assert "another TPM" in str(err.value)
        copy.stop()
    finally:
        other.stop()


def test_many_slots_many_clients_cross_checked_by_openssl(sim: Swtpm, tmp_path: Path) -> None:
    """12 TPM key slots used by 4 client connections at once (the TPM has 3 object slots);
    each signature is verified through the daemon by the OpenSSL provider and by pyca."""
    import random
    import threading

    slots = [
        {
            "name": f"Tpm{i}",
            "algorithm": "ECDSA-P256",
            "provider": PROVIDER_ID,
            "permissions": ["sign", "verify"],
            "provision": "generate",
        }
        for i in range(11)
    ]
    slots.append(
        {
            "name": "TpmRsa",
            "algorithm": "RSA-2048",
            "provider": PROVIDER_ID,
            "permissions": ["sign", "verify"],
            "provision": "generate",
        }
    )
    config = {
        "providers": [
            {"name": "openssl", "id": 2, "options": {}},
            {"name": "tpm2", "id": PROVIDER_ID, "options": {"tcti": sim.tcti, "reset_lockout": True}},
        ],
        "key_slots": slots,
    }
    errors: list[BaseException] = []
    verified = [0]
    with DaemonProcess(tmp_path / "daemon", config) as daemon:

        def client(seed: int) -> None:
            rng = random.Random(seed)
            try:
                with daemon.stack() as stack, stack.create_crypto_context() as ctx:
                    km = ctx.create_key_management_context(cs.KeyManagementContextConfig())
                    for _ in range(12):
                        name = rng.choice([s["name"] for s in slots])
                        algorithm = "RSA-PSS-SHA256" if name == "TpmRsa" else "ECDSA-P256"
                        slot = ctx.resolve_resource(name, cs.ResourceType.KEY_SLOT)
                        message = rng.randbytes(rng.randrange(1, 2000))
                        with km.load_key(slot) as key:
                            with ctx.create_sign_context(
                                cs.SignContextConfig().set_algorithm(algorithm).set_key(key)
                            ) as signer:
                                signature = signer.sign(message)
                            spki = km.export_public_key(key)
                        params = (
                            cs.ImportKeyParams()
                            .set_algorithm("RSA-2048" if name == "TpmRsa" else "ECDSA-P256")
                            .set_material(spki, cs.KeyFormat.SPKI_DER)
                        )
                        params.set_permissions(P.VERIFY)
                        params.set_provider(2)
                        with (
                            km.import_key(params) as public,
                            ctx.create_verify_context(
                                cs.VerifyContextConfig()
                                .set_algorithm(algorithm)
                                .set_key(public)
                                .set_provider(2)
                            ) as verifier,
                        ):
                            assert verifier.verify(message, signature)
                            assert not verifier.verify(message + b"x", signature)
                        if algorithm == "ECDSA-P256":
                            _check(spki, signature, message)
                        verified[0] += 1
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert errors == [] and verified[0] == 48
