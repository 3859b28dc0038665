"""Deadlines and worker restarts: a module call that blocks (test hook ``test_hang``: the
worker sleeps inside that request, as a stuck ``C_*`` call would), a worker that dies."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec
from cryptostack_pkcs11.provider import PKCS11Provider

from cryptostack_core.sdk import CipherDirection, CryptoError, ErrorCode, ProviderState
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_core.sdk import deadline_scope as deadline

ProviderFactory = Callable[..., PKCS11Provider]



def sha256(provider: PKCS11Provider, data: bytes) -> bytes:
    op = provider.create_hash("SHA-256")
    op.update(data)
    return op.finalize()


def ecdsa_sign(provider: PKCS11Provider, key: Any, msg: bytes) -> bytes:
    op = provider.create_signer("ECDSA-P256", key, b"")
    op.update(msg)
    return op.finalize()


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def test_blocked_call_is_abandoned_then_the_worker_restarts(
        make_provider: ProviderFactory) -> None:
    provider = make_provider(call_timeout=1.5, stream_buffer=64, degraded_seconds=30,
                             test_hang={"op": "sign", "seconds": 60, "times": 1})
    pair = provider.generate_key("ECDSA-P256", P.SIGN | P.VERIFY)
    persisted = provider.load_stored_key(provider.persist_key(pair, "Persisted"),
                                         "ECDSA-P256", P.SIGN | P.VERIFY)
    public = ser.load_der_public_key(provider.export_public_key(persisted))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    session_key = provider.generate_key("AES-256", P.ENCRYPT | P.DECRYPT)
    buffered = provider.create_hash("SHA-256")
    buffered.update(b"short")  # held in the provider: survives a restart
    streaming = provider.create_hash("SHA-256")
    streaming.update(os.urandom(100))  # past stream_buffer: state lives in a token session
    first_pid, first_generation = provider.host.worker_pid, provider.host.generation
    assert first_pid is not None

    # The call blocks in the module: its caller gets OPERATION_TIMED_OUT at its deadline.
    started = time.monotonic()
    with deadline(0.3), pytest.raises(CryptoError) as err:
        ecdsa_sign(provider, persisted, b"blocked")
    waited = time.monotonic() - started
    assert err.value.code is ErrorCode.OPERATION_TIMED_OUT
    assert 0.25 <= waited < 0.8, waited

    # Other contexts are served meanwhile, on the other channels of the same worker.
    for i in range(20):
        t0 = time.monotonic()
        with deadline(0.5):
            assert sha256(provider, b"%d" % i) == hashlib.sha256(b"%d" % i).digest()
        assert time.monotonic() - t0 < 0.3
    assert provider.host.worker_pid == first_pid  # not yet: the call may still finish
    assert provider.state()[0] is ProviderState.READY

    # Stuck for call_timeout: the worker is killed and a new one started.
    wait_for(lambda: provider.host.generation not in (None, first_generation), 5.0)
    assert time.monotonic() - started >= 1.4
    assert provider.host.worker_pid != first_pid
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)
    assert provider.host.restarts == 1
    state, reason = provider.state()
    assert state is ProviderState.DEGRADED and "sign" in reason
    assert provider.describe()["worker_restarts"] == 1

    # Recovery: token objects are found again, provider-held state carries on...
    signature = ecdsa_sign(provider, persisted, b"after restart")
    public.verify(signature, b"after restart", ec.ECDSA(hashes.SHA256()))
    buffered.update(b" message")
    assert buffered.finalize() == hashlib.sha256(b"short message").digest()
    # ...while what lived only in the dead worker is reported as lost.
    with pytest.raises(CryptoError) as err:
        streaming.finalize()
    assert err.value.code is ErrorCode.PROVIDER_ERROR and "restarted" in err.value.message
    with pytest.raises(CryptoError) as err:
        op = provider.create_cipher("AES-256-GCM", session_key, CipherDirection.ENCRYPT,
                                    bytes(12), 16)
        op.finalize()
    assert err.value.code is ErrorCode.PROVIDER_ERROR and "no longer exists" in err.value.message
    fresh = provider.generate_key("AES-256", P.ENCRYPT)  # new keys work as before
    assert provider.create_cipher("AES-256-CBC", fresh, CipherDirection.ENCRYPT, bytes(16),
                                  16).finalize()


def test_call_without_deadline_is_bounded_by_call_timeout(
        make_provider: ProviderFactory) -> None:
    provider = make_provider(call_timeout=0.8,
                             test_hang={"op": "digest", "seconds": 60, "times": 1})
    first_pid = provider.host.worker_pid
    started = time.monotonic()
    with pytest.raises(CryptoError) as err:
        sha256(provider, b"x")
    assert err.value.code is ErrorCode.OPERATION_TIMED_OUT
    assert 0.75 <= time.monotonic() - started < 1.5
    assert sha256(provider, b"x") == hashlib.sha256(b"x").digest()  # on the new worker
    assert provider.host.worker_pid != first_pid and provider.host.restarts == 1


def test_late_reply_of_an_abandoned_call_is_cleaned_up(make_provider: ProviderFactory) -> None:
    """A call that finishes after its caller gave up does not leak what it created, and a
    merely slow call does not cost a restart."""
    provider = make_provider(call_timeout=5,
                             test_hang={"op": "generate_secret", "seconds": 0.4, "times": 1})
    pid = provider.host.worker_pid
    before = provider.host.call("stats")["objects"]
    with deadline(0.1), pytest.raises(CryptoError) as err:
        provider.generate_key("AES-128", P.ENCRYPT)
    assert err.value.code is ErrorCode.OPERATION_TIMED_OUT
    time.sleep(0.6)  # the late reply arrives; the reclaimer queues the destroy
    provider.host.call("ping")  # carries the cleanup
    assert provider.host.call("stats")["objects"] == before
    assert provider.host.worker_pid == pid and provider.host.restarts == 0


def test_worker_death_is_transparent_for_keyless_calls(make_provider: ProviderFactory) -> None:
    provider = make_provider(test_hang={"op": "digest", "seconds": 60, "times": 1})
    first_pid = provider.host.worker_pid
    assert first_pid is not None
    result: dict[str, Any] = {}

    def blocked() -> None:  # a call in flight when the worker dies
        try:
            result["digest"] = sha256(provider, b"in flight")
        except CryptoError as exc:
            result["error"] = exc

    thread = threading.Thread(target=blocked)
    thread.start()
    time.sleep(0.2)
    os.kill(first_pid, signal.SIGKILL)
    thread.join(10)
    assert result.get("digest") == hashlib.sha256(b"in flight").digest(), result
    assert provider.host.worker_pid not in (None, first_pid)
    # an idle worker that dies is replaced without any call
    second_pid = provider.host.worker_pid
    assert second_pid is not None
    os.kill(second_pid, signal.SIGKILL)
    wait_for(lambda: provider.host.worker_pid not in (None, second_pid), 5.0)
    assert provider.host.restarts == 2
    assert provider.random_bytes(16)


def test_concurrent_callers_while_one_call_hangs(make_provider: ProviderFactory) -> None:
    """With one channel stuck, the others keep serving many threads at once."""
    provider = make_provider(sessions=4, call_timeout=3,
                             test_hang={"op": "sign", "seconds": 60, "times": 1})
    key = provider.generate_key("HMAC-SHA-256", P.MAC)
    errors: list[BaseException] = []

    def hang() -> None:
        with deadline(0.2), contextlib.suppress(CryptoError):
            op = provider.create_signer("HMAC-SHA-256", key, b"")
            op.finalize()

    def work(n: int) -> None:
        try:
            for i in range(30):
                data = b"%d-%d" % (n, i)
                with deadline(1.0):
                    assert sha256(provider, data) == hashlib.sha256(data).digest()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    hanging = threading.Thread(target=hang)
    hanging.start()
    hanging.join()
    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert provider.host.restarts == 0  # still within call_timeout
