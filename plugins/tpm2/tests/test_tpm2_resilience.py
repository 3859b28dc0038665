"""Deadlines, worker kills and restarts, TPM restarts, stored keys and the sealed KEK.

Deadlines follow the worker host's one rule (:mod:`cryptostack_core.sdk.workers.host`): the
caller gets OPERATION_TIMED_OUT at its deadline; a call still running at ``call_timeout``
kills and restarts the worker. Blocking TPM commands come from the host's hang hook
(``test_hang``), and the tests wait for events (the hook holding a call, a restart), never
for time to pass."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptostack_tpm2.provider import TPM2Provider
from cryptostack_tpm2.testing import Swtpm

from cryptostack_core.sdk import (
    CipherDirection,
    CryptoError,
    ErrorCode,
    KeyFormat,
    ProviderKey,
    ProviderState,
)
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_core.sdk import deadline_scope as deadline

HANG_RANDOM = {"op": "random", "times": 1}  # the next GetRandom blocks in the worker
WAIT = 30.0  # generous bound for what should happen at once


def _sign(tpm: TPM2Provider, key: ProviderKey, message: bytes) -> bytes:
    signer = tpm.create_signer("ECDSA-P256", key, b"")
    signer.update(message)
    return signer.finalize()


def _check_signature(tpm: TPM2Provider, key: ProviderKey, message: bytes) -> None:
    public = serialization.load_der_public_key(tpm.export_public_key(key))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(_sign(tpm, key, message), message, ec.ECDSA(hashes.SHA256()))


def _wait_ready(tpm: TPM2Provider, timeout: float = WAIT) -> None:
    """Until a worker is running again (restarts are events of the host)."""
    assert tpm.host.wait_until(lambda h: h.generation is not None, timeout), tpm.state()


# --- deadlines -----------------------------------------------------------------------------


def test_blocked_call_times_out_and_the_worker_is_replaced(
    fresh_swtpm: Swtpm, make_provider: Callable[..., TPM2Provider]
) -> None:
    tpm = make_provider(fresh_swtpm, call_timeout=1.0, degraded_seconds=0, test_hang=HANG_RANDOM)
    key = tpm.generate_key("ECDSA-P256", P.SIGN)
    long_hash = tpm.create_hash("SHA-256")
    long_hash.update(b"x" * 40_000)  # state held by the worker (a TPM sequence)
    first_pid = tpm.host.worker_pid
    started = time.monotonic()
    with pytest.raises(CryptoError) as err:
        tpm.random_bytes(13)  # no deadline: bounded by call_timeout
    assert err.value.code is ErrorCode.OPERATION_TIMED_OUT
    assert "call_timeout" in err.value.message
    assert time.monotonic() - started < WAIT
    # Other calls recover: they wait for the new worker; keys reload from their blobs.
    with deadline(WAIT):  # (without a deadline a call waits call_timeout for a worker)
        assert len(tpm.random_bytes(16)) == 16
    assert tpm.host.worker_pid != first_pid and tpm.host.restarts == 1
    assert tpm.state() == (ProviderState.READY, "")
    _check_signature(tpm, key, b"after the restart")
    digest = tpm.create_hash("SHA-256")
    digest.update(b"abc")
    assert digest.finalize() == hashlib.sha256(b"abc").digest()
    # ... but state that lived in the killed worker is gone, and says so.
    with pytest.raises(CryptoError) as err:
        long_hash.update(b"y" * 40_000)
    assert err.value.code is ErrorCode.CONTEXT_IN_ERROR_STATE
    assert tpm.describe()["worker_timeouts"] == 1


def test_caller_deadline_abandons_and_only_call_timeout_kills(
    fresh_swtpm: Swtpm, make_provider: Callable[..., TPM2Provider]
) -> None:
    """The one deadline rule on a serial backend: a caller's deadline never kills the
    worker; calls queued behind a stuck one give up at their own deadlines; the stuck one
    is killed when it has run for call_timeout, and service resumes."""
    tpm = make_provider(fresh_swtpm, call_timeout=2.0, test_hang=HANG_RANDOM)
    first_pid = tpm.host.worker_pid
    with deadline(0.3), pytest.raises(CryptoError) as err:
        tpm.random_bytes(13)  # the daemon's 0.3 s, not call_timeout
    assert err.value.code is ErrorCode.OPERATION_TIMED_OUT and "abandoned" in err.value.message
    assert tpm.host.hangs_entered == 1 and tpm.host.restarts == 0
    # The TPM is busy with the abandoned call: a call behind it gives up at its own
    # deadline without being sent, and kills nothing.
    with deadline(0.3), pytest.raises(CryptoError) as err:
        tpm.random_bytes(8)
    assert err.value.code is ErrorCode.OPERATION_TIMED_OUT and "busy" in err.value.message
    assert tpm.host.restarts == 0 and tpm.host.worker_pid == first_pid
    # At call_timeout the stuck call costs the worker its life; then all is well again.
    assert tpm.host.wait_until(lambda h: h.restarts == 1, WAIT)
    assert "random" in tpm.host.last_restart_reason
    with deadline(WAIT):
        assert len(tpm.random_bytes(8)) == 8
    assert tpm.host.worker_pid != first_pid and tpm.describe()["worker_timeouts"] == 1


def test_a_stalled_tpm_times_out_and_service_resumes(
    fresh_swtpm: Swtpm, make_provider: Callable[..., TPM2Provider]
) -> None:
    """A real stall: the simulator is SIGSTOPped in the middle of the provider's traffic."""
    tpm = make_provider(fresh_swtpm, call_timeout=1.5, start_timeout=10.0)
    key = tpm.generate_key("ECDSA-P256", P.SIGN)
    fresh_swtpm.pause()
    try:
        with pytest.raises(CryptoError) as err:
            _sign(tpm, key, b"stalled")
        assert err.value.code is ErrorCode.OPERATION_TIMED_OUT
        assert tpm.state()[0] is not ProviderState.READY  # the replacement cannot connect
        with pytest.raises(CryptoError) as err:
            tpm.random_bytes(4)
        assert err.value.code in (ErrorCode.OPERATION_TIMED_OUT, ErrorCode.PROVIDER_UNAVAILABLE)
    finally:
        fresh_swtpm.resume()
    _wait_ready(tpm)
    _check_signature(tpm, key, b"resumed")


def test_a_killed_worker_is_replaced_and_its_objects_flushed(
    fresh_swtpm: Swtpm, make_provider: Callable[..., TPM2Provider]
) -> None:
    tpm = make_provider(fresh_swtpm)
    keys = [tpm.generate_key("ECDSA-P256", P.SIGN) for _ in range(3)]
    for key in keys:
        _sign(tpm, key, b"load them")
    assert tpm.host.call("ping")["transient_in_tpm"] == 3
    pid = tpm.host.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _check_signature(tpm, keys[0], b"the call is retried on a new worker")
    assert tpm.host.restarts == 1
    assert tpm.host.info is not None and tpm.host.info.flushed_leftovers == 3


# --- the TPM restarting ------------------------------------------------------------------


@pytest.mark.parametrize("orderly", [True, False])
def test_tpm_restart_under_a_running_provider(
    fresh_swtpm: Swtpm, make_provider: Callable[..., TPM2Provider], orderly: bool
) -> None:
    tpm = make_provider(fresh_swtpm)
    ecdsa = tpm.generate_key("ECDSA-P256", P.SIGN)
    secret = os.urandom(32)
    mac_key = tpm.import_key("HMAC-SHA-256", secret, KeyFormat.RAW, P.MAC | P.SIGN)
    _check_signature(tpm, ecdsa, b"before")
    fresh_swtpm.restart(orderly=orderly)  # same state directory; transient objects are gone
    _check_signature(tpm, ecdsa, b"after")
    signer = tpm.create_signer("HMAC-SHA-256", mac_key, b"")
    signer.update(b"after")
    assert signer.finalize() == hmac.new(secret, b"after", "sha256").digest()
    assert tpm.state()[0] is ProviderState.READY


def test_stored_keys_survive_tpm_and_provider_restart(
    fresh_swtpm: Swtpm, make_provider: Callable[..., TPM2Provider]
) -> None:
    first = make_provider(fresh_swtpm)
    ecdsa = first.generate_key("ECDSA-P256", P.SIGN | P.VERIFY)
    aes = first.generate_key("AES-256", P.ENCRYPT | P.DECRYPT)
    mac = first.generate_key("HMAC-SHA-256", P.MAC | P.SIGN | P.VERIFY)
    stored = {name: first.persist_key(k, name) for name, k in [("ecdsa", ecdsa), ("aes", aes), ("mac", mac)]}
    spki = first.export_public_key(ecdsa)
    iv = os.urandom(16)
    enc = first.create_cipher("AES-256-CBC", aes, CipherDirection.ENCRYPT, iv, 16)
    ciphertext = enc.update(b"kept across restarts") + enc.finalize()
    signer = first.create_signer("HMAC-SHA-256", mac, b"")
    signer.update(b"m")
    tag = signer.finalize()
    first.close()
    fresh_swtpm.restart()

    second = make_provider(fresh_swtpm)
    ecdsa2 = second.load_stored_key(stored["ecdsa"], "ECDSA-P256", P.SIGN | P.VERIFY)
    assert second.export_public_key(ecdsa2) == spki
    _check_signature(second, ecdsa2, b"same key")
    aes2 = second.load_stored_key(stored["aes"], "AES-256", P.ENCRYPT | P.DECRYPT)
    dec = second.create_cipher("AES-256-CBC", aes2, CipherDirection.DECRYPT, iv, 16)
    assert dec.update(ciphertext) + dec.finalize() == b"kept across restarts"
    mac2 = second.load_stored_key(stored["mac"], "HMAC-SHA-256", P.MAC | P.VERIFY)
    verifier = second.create_verifier("HMAC-SHA-256", mac2, b"")
    verifier.update(b"m")
    assert verifier.finalize(tag)


# --- the sealed key-encryption key -------------------------------------------------------


def test_sealed_kek_survives_a_tpm_restart(
    fresh_swtpm: Swtpm, make_provider: Callable[..., TPM2Provider], tmp_path: Path
) -> None:
    path = tmp_path / "keystore.kek"
    tpm = make_provider(fresh_swtpm)
    source = tpm.kek_source()
    assert source is not None
    kek = source.load_or_create(path)
    assert len(kek) == 32 and path.exists()
    assert kek not in path.read_bytes()  # only the TPM-encrypted blob is on disk
    assert path.stat().st_mode & 0o077 == 0
    assert source.load_or_create(path) == kek
    tpm.close()
    fresh_swtpm.restart()
    again = make_provider(fresh_swtpm).kek_source()
    assert again is not None and again.load_or_create(path) == kek


def test_sealed_kek_is_useless_with_another_tpm(
    fresh_swtpm: Swtpm, tmp_path: Path, make_provider: Callable[..., TPM2Provider]
) -> None:
    path = tmp_path / "keystore.kek"
    original = make_provider(fresh_swtpm).kek_source()
    assert original is not None
    original.load_or_create(path)
    other_sim = Swtpm(tmp_path / "other").start()
    other_provider = make_provider(other_sim)
    try:
        other = other_provider.kek_source()
        assert other is not None
        with pytest.raises(CryptoError) as err:
            other.load_or_create(path)
        assert err.value.code is ErrorCode.ACCESS_DENIED
        assert str(path) in err.value.message and "another TPM" in err.value.message
        # Past the file's own check, the TPM refuses to load the sealed object.
        import cbor2

        record = cbor2.loads(path.read_bytes())
        record["primary"] = other._primary_name  # type: ignore[attr-defined]
        forged = tmp_path / "forged.kek"
        forged.write_bytes(cbor2.dumps(record))
        with pytest.raises(CryptoError) as err:
            other.load_or_create(forged)
        assert err.value.code is ErrorCode.ACCESS_DENIED
        assert "cannot unseal" in err.value.message and "another TPM" in err.value.message
    finally:
        other_provider.close()  # before its simulator stops
        other_sim.stop()


# --- start-up ---------------------------------------------------------------------------


def test_start_failures_are_clear(tmp_path: Path) -> None:
    import socket

    from cryptostack_core.sdk import ProviderEnvironment

    env = ProviderEnvironment(tmp_path, tmp_path)
    with pytest.raises(CryptoError) as err:
        TPM2Provider(1, {"tcti": "swtpm:port=1", "colour": "blue"}, env).start()
    assert err.value.code is ErrorCode.INVALID_ARGUMENT and "colour" in err.value.message
    with pytest.raises(CryptoError) as err:
        TPM2Provider(1, {"call_timeout": -1}, env).start()
    assert err.value.code is ErrorCode.INVALID_ARGUMENT and "call_timeout" in err.value.message
    with socket.socket() as taken:  # bound, never listening: no simulator can take the port
        taken.bind(("127.0.0.1", 0))
        nobody = f"swtpm:host=127.0.0.1,port={taken.getsockname()[1]}"
        with pytest.raises(CryptoError) as err:
            TPM2Provider(1, {"tcti": nobody}, env).start()
    assert err.value.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert nobody in err.value.message
