"""Many callers at once. SoftHSM2 races (wrong results, CKR_GENERAL_ERROR, segfaults) when
several threads call it after python-pkcs11's ``C_Initialize(NULL)``; the worker initialises
it with ``CKF_OS_LOCKING_OK`` and keeps one operation per session. These tests run mixed
work from many threads, with multi-part operations interleaved across the session pool."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptostack_pkcs11.provider import PKCS11Provider

from cryptostack_core.sdk import CipherDirection, CryptoError, ErrorCode, KeyFormat
from cryptostack_core.sdk import KeyOperationPermission as P

ProviderFactory = Callable[..., PKCS11Provider]


def run_threads(count: int, target: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            target(n)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return errors


def test_many_threads_mixed_operations(make_provider: ProviderFactory) -> None:
    provider = make_provider(sessions=4, stream_buffer=256)
    material = os.urandom(32)
    aes = provider.import_key("AES-256", material, KeyFormat.RAW, P.ENCRYPT | P.DECRYPT)
    mac_key = os.urandom(32)
    hmac_key = provider.import_key("HMAC-SHA-256", mac_key, KeyFormat.RAW, P.MAC)
    pair = provider.generate_key("ECDSA-P256", P.SIGN | P.VERIFY)
    public = pair.public_key  # type: ignore[attr-defined]

    def work(n: int) -> None:
        for i in range(25):
            msg = os.urandom(50 + 300 * (i % 3))  # some above stream_buffer: multi-part
            iv = os.urandom(12)
            enc = provider.create_cipher("AES-256-GCM", aes, CipherDirection.ENCRYPT, iv, 16)
            ct = b"".join(enc.update(msg[j : j + 100]) for j in range(0, len(msg), 100))
            ct += enc.finalize()
            assert ct == AESGCM(material).encrypt(iv, msg, None)
            h = provider.create_hash("SHA-384")
            for j in range(0, len(msg), 70):
                h.update(msg[j : j + 70])
            assert h.finalize() == hashlib.sha384(msg).digest()
            mac = provider.create_signer("HMAC-SHA-256", hmac_key, b"")
            mac.update(msg)
            assert mac.finalize() == hmac.new(mac_key, msg, "sha256").digest()
            signer = provider.create_signer("ECDSA-P256", pair, b"")
            signer.update(msg)
            public.verify(signer.finalize(), msg, ec.ECDSA(hashes.SHA256()))

    assert run_threads(8, work) == []
    stats = provider.host.call("stats")
    assert stats["operations"] == 0  # every multi-part operation ended
    assert provider.host.restarts == 0


def test_many_threads_managing_keys(
    make_provider: ProviderFactory, list_token_objects: Any, softhsm_token: Any
) -> None:
    provider = make_provider(sessions=3)
    before = provider.host.call("stats")["objects"]

    def work(n: int) -> None:
        for i in range(6):
            key = provider.generate_key("AES-128", P.ENCRYPT | P.DECRYPT)
            stored = provider.persist_key(key, f"slot-{n}-{i}")
            loaded = provider.load_stored_key(stored, "AES-128", P.ENCRYPT | P.DECRYPT)
            op = provider.create_cipher("AES-128-CBC", loaded, CipherDirection.ENCRYPT, bytes(16), 16)
            op.update(b"data")
            ct = op.finalize()
            back = provider.create_cipher("AES-128-CBC", key, CipherDirection.DECRYPT, bytes(16), 16)
            back.update(ct)
            assert back.finalize() == b"data"
            provider.release_key(loaded)
            provider.delete_stored_key(stored)
            provider.release_key(key)

    assert run_threads(6, work) == []
    assert list_token_objects(softhsm_token) == []
    provider.host.call("ping")  # carries the last queued destroys
    assert provider.host.call("stats")["objects"] == before


def test_abandoned_multipart_operations_free_their_sessions(make_provider: ProviderFactory) -> None:
    """An operation dropped without finalize (a client that went away) does not keep its
    token session: the abort rides on the next request. Streams cannot take the sessions
    kept for one-shot calls."""
    provider = make_provider(sessions=2, max_sessions=6, stream_buffer=16)
    for _ in range(10):
        op = provider.create_hash("SHA-256")
        op.update(os.urandom(64))  # streams: holds a token session
        del op
    assert provider.random_bytes(1)  # carries the aborts
    stats = provider.host.call("stats")
    assert stats["operations"] == 0 and stats["sessions"] <= 6
    held = []
    for _ in range(4):
        op = provider.create_hash("SHA-256")
        op.update(os.urandom(64))
        held.append(op)
    try:
        op = provider.create_hash("SHA-256")
        op.update(os.urandom(64))
        raise AssertionError("a fifth concurrent multi-part operation was accepted")
    except CryptoError as exc:
        assert exc.code is ErrorCode.RESOURCE_EXHAUSTED
    short = provider.create_hash("SHA-256")  # one-shot calls are still served
    short.update(b"abc")
    assert short.finalize() == hashlib.sha256(b"abc").digest()
    assert [len(h.finalize()) for h in held] == [32] * 4
