"""Deadlines and worker restarts: a module call that blocks (the worker host's hang hook
``test_hang``: the worker holds that request, as a stuck ``C_*`` call would), a worker that
dies. The one deadline rule: the caller gets OPERATION_TIMED_OUT at its deadline; a call
still running at ``call_timeout`` kills and restarts the worker. The tests wait for events
(the hook holding a call, a restart, a cleanup), never for time to pass; elapsed time is
bounded only generously."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
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
from cryptostack_core.testing.waiting import wait_for_exit

ProviderFactory = Callable[..., PKCS11Provider]
WAIT = 30.0  # generous bound for what should happen at once


def sha256(provider: PKCS11Provider, data: bytes) -> bytes:
    op = provider.create_hash("SHA-256")
    op.update(data)
    return op.finalize()


def ecdsa_sign(provider: PKCS11Provider, key: Any, msg: bytes) -> bytes:
    op = provider.create_signer("ECDSA-P256", key, b"")
    op.update(msg)
    return op.finalize()


def test_blocked_call_is_abandoned_then_the_worker_restarts(make_provider: ProviderFactory) -> None:
    provider = make_provider(
        call_timeout=4, stream_buffer=64, degraded_seconds=3600, test_hang={"op": "sign"}
    )
    pair = provider.generate_key("ECDSA-P256", P.SIGN | P.VERIFY)
    persisted = provider.load_stored_key(
        provider.persist_key(pair, "Persisted"), "ECDSA-P256", P.SIGN | P.VERIFY
    )
    public = ser.load_der_public_key(provider.export_public_key(persisted))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    session_key = provider.generate_key("AES-256", P.ENCRYPT | P.DECRYPT)
    buffered = provider.create_hash("SHA-256")
    buffered.update(b"short")  # held in the provider: survives a restart
    streaming = provider.create_hash("SHA-256")
    streaming.update(os.urandom(100))  # past stream_buffer: state lives in a token session
    first_pid, first_generation = provider.host.worker_pid, provider.host.generation
    assert first_pid is not None

    # The call blocks in the module: its caller gets OPERATION_TIMED_OUT at its deadline;
    # the worker is not killed for that.
    with deadline(0.3), pytest.raises(CryptoError) as err:
        ecdsa_sign(provider, persisted, b"blocked")
    assert err.value.code is ErrorCode.OPERATION_TIMED_OUT and "abandoned" in err.value.message
    assert provider.host.hangs_entered == 1 and provider.host.abandoned == 1

    # Other contexts are served meanwhile, on the other sessions of the same worker.
    for i in range(20):
        with deadline(WAIT):
            assert sha256(provider, b"%d" % i) == hashlib.sha256(b"%d" % i).digest()

    # Stuck for call_timeout: the worker is killed and a new one started.
    assert provider.host.wait_until(lambda h: h.generation not in (None, first_generation), WAIT)
    assert "sign stayed blocked for 4 s (call_timeout)" == provider.host.last_restart_reason
    assert provider.host.worker_pid != first_pid
    assert wait_for_exit(first_pid, WAIT)
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
        op = provider.create_cipher("AES-256-GCM", session_key, CipherDirection.ENCRYPT, bytes(12), 16)
        op.finalize()
    assert err.value.code is ErrorCode.PROVIDER_ERROR and "no longer exists" in err.value.message
    fresh = provider.generate_key("AES-256", P.ENCRYPT)  # new keys work as before
    assert provider.create_cipher("AES-256-CBC", fresh, CipherDirection.ENCRYPT, bytes(16), 16).finalize()


def test_call_without_deadline_is_bounded_by_call_timeout(make_provider: ProviderFactory) -> None:
    provider = make_provider(call_timeout=0.8, test_hang={"op": "digest"})
    first_pid = provider.host.worker_pid
    with pytest.raises(CryptoError) as err:
        sha256(provider, b"x")
    assert err.value.code is ErrorCode.OPERATION_TIMED_OUT
    assert "call_timeout" in err.value.message
    with deadline(WAIT):  # waits for the new worker (without a deadline: call_timeout)
        assert sha256(provider, b"x") == hashlib.sha256(b"x").digest()
    assert provider.host.worker_pid != first_pid and provider.host.restarts == 1


def test_late_reply_of_an_abandoned_call_is_cleaned_up(make_provider: ProviderFactory) -> None:
    """A call that finishes after its caller gave up does not leak what it created, and a
    merely slow call does not cost a restart."""
    provider = make_provider(call_timeout=60, test_hang={"op": "generate_secret", "seconds": 2})
    pid = provider.host.worker_pid
    before = provider.host.call("stats")["objects"]
    with deadline(0.1), pytest.raises(CryptoError) as err:
        provider.generate_key("AES-128", P.ENCRYPT)
    assert err.value.code is ErrorCode.OPERATION_TIMED_OUT
    # the late answer arrives: the host has the key it created destroyed at once
    assert provider.host.wait_until(lambda h: h.late_replies == 1 and h.cleanups_in_flight == 0, WAIT)
    assert provider.host.call("stats")["objects"] == before
    assert provider.host.worker_pid == pid and provider.host.restarts == 0


def test_worker_death_is_transparent_for_keyless_calls(make_provider: ProviderFactory) -> None:
    provider = make_provider(test_hang={"op": "digest"})
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
    assert provider.host.wait_until(lambda h: h.hangs_entered == 1, WAIT)  # held in the worker
    os.kill(first_pid, signal.SIGKILL)
    thread.join(WAIT)
    assert result.get("digest") == hashlib.sha256(b"in flight").digest(), result
    assert provider.host.worker_pid not in (None, first_pid)
    # an idle worker that dies is replaced without any call
    second_pid = provider.host.worker_pid
    assert second_pid is not None
    os.kill(second_pid, signal.SIGKILL)
    assert provider.host.wait_until(lambda h: h.worker_pid not in (None, second_pid), WAIT)
    assert provider.host.restarts == 2
    assert provider.random_bytes(16)


def test_concurrent_callers_while_one_call_hangs(make_provider: ProviderFactory) -> None:
    """With one channel stuck, the others keep serving many threads at once."""
    provider = make_provider(sessions=4, call_timeout=60, test_hang={"op": "sign"})
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
                with deadline(WAIT):
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
    assert provider.host.restarts == 0 and provider.host.abandoned == 1
