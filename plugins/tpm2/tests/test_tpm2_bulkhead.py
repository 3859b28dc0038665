"""A slow or hung TPM holds up only its own clients (issue 10, finding 8): requests are
scheduled on the pool of the provider they touch, and TPM randomness comes in bounded chunks
so one large request does not serialise every other TPM client behind it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from cryptostack_tpm2.testing import Swtpm

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.waiting import eventually

TPM, SOFT = 5, 2
HELD = "test_hang is holding"  # the daemon's log line when the hang hook holds a call


def _config(sim: Swtpm, tpm: dict[str, Any], **daemon: Any) -> dict[str, Any]:
    return {
        "daemon": daemon,
        "providers": [
            {"name": "tpm2", "id": TPM, "options": {"tcti": sim.tcti, "reset_lockout": True, **tpm}},
            {"name": "openssl", "id": SOFT, "options": {}},
        ],
        "key_slots": [
            {
                "name": "SoftKey",
                "algorithm": "AES-256",
                "provider": SOFT,
                "compatible_providers": [SOFT],
                "provision": "generate",
                "permissions": ["encrypt", "decrypt"],
            }
        ],
    }


def test_a_hung_tpm_delays_only_tpm_clients(tmp_path: Path, fresh_swtpm: Swtpm) -> None:
    # The next GetRandom blocks in the TPM worker until call_timeout kills it.
    hang = {"test_hang": {"op": "random", "times": 1}, "call_timeout": 20.0}
    with DaemonProcess(tmp_path / "d", _config(fresh_swtpm, hang, worker_threads=1)) as daemon:
        stuck_done = threading.Event()

        def stuck() -> None:  # the TPM's only worker thread waits on a hung TPM
            with daemon.stack(timeout=4.0) as stack:
                try:
                    stack.create_crypto_context().create_key_management_context().generate_random(
                        77
                    )  # the TPM: preferred
                except cs.CryptoError:
                    pass
            stuck_done.set()

        thread = threading.Thread(target=stuck)
        thread.start()
        eventually(lambda: HELD in daemon.log_text(), 20, "the TPM call to hang")
        started = time.monotonic()
        with daemon.stack(timeout=30) as stack:
            ctx = stack.create_crypto_context()
            slot = ctx.resolve_resource("SoftKey", cs.ResourceType.KEY_SLOT)
            enc = ctx.create_cipher_context(
                cs.CipherContextConfig()
                .set_algorithm("AES-256-GCM")
                .set_key(slot)
                .set_direction(cs.CipherDirection.ENCRYPT)
            )
            enc.init(bytes(12))
            assert len(enc.update(b"m") + enc.finalize()) == 17
            km = ctx.create_key_management_context()
            km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256").set_provider(SOFT))
            status = {p["id"]: p for p in stack.status()["providers"]}
        elapsed = time.monotonic() - started
        assert not stuck_done.is_set(), f"the TPM call was not hung during the check ({elapsed})"
        assert elapsed < 2.5, f"openssl's client waited {elapsed:.1f} s for the TPM"
        assert status[SOFT]["state"] == "ready", status
        thread.join(30)
        assert "Traceback" not in daemon.log_text()


def test_large_tpm_randomness_lets_other_tpm_clients_through(tmp_path: Path, fresh_swtpm: Swtpm) -> None:
    with DaemonProcess(tmp_path / "d", _config(fresh_swtpm, {})) as daemon:
        big_started = threading.Event()
        big_done = threading.Event()
        big: list[float] = []

        def large() -> None:
            try:
                with daemon.stack(timeout=120) as stack:
                    km = stack.create_crypto_context().create_key_management_context()
                    big_started.set()
                    started = time.monotonic()
                    assert len(km.generate_random(1 << 20)) == 1 << 20
                    big.append(time.monotonic() - started)
            finally:
                big_done.set()

        thread = threading.Thread(target=large)
        thread.start()
        assert big_started.wait(30)
        # Small requests one after the other for as long as the large one runs (ordered by
        # its end, not by a sleep): each must get through between its chunks.
        small: list[float] = []
        give_up = time.monotonic() + 120
        with daemon.stack(timeout=30) as stack:
            km = stack.create_crypto_context().create_key_management_context()
            while not big_done.is_set() and time.monotonic() < give_up:
                started = time.monotonic()
                assert len(km.generate_random(32)) == 32
                small.append(time.monotonic() - started)
        thread.join(120)
        assert big, "the 1 MiB request did not complete"
        assert len(small) >= 3, f"only {len(small)} small requests ran during the 1 MiB one"
        assert not big[0] < max(small) * 3, (big, small)  # the large one ran much longer
        assert max(small) < 1.0, f"a 32-byte request waited {max(small):.2f} s behind 1 MiB"
