"""One round trip for a whole message on every context kind (issue 14): hash ``single_shot``,
cipher ``encrypt``/``decrypt``, ``sign``, ``mac`` and ``verify``; each is one request, gives
the same bytes as the streamed calls, and falls back to streaming for data larger than one
request may carry."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import cryptostack_core as cs
from cryptostack_core import CipherDirection as D
from cryptostack_core import ErrorCode as E
from cryptostack_core import KeyOperationPermission as P
from cryptostack_core.testing.daemon import DaemonProcess

MockConfig = Callable[..., dict[str, Any]]
IV = bytes(12)


class Counted:
    """Counts the requests a stack sends (wraps its transport's ``call``)."""

    def __init__(self, stack: cs.CryptoStack) -> None:
        self.calls: list[str] = []
        transport = stack._channel.transport
        inner = transport.call

        def call(op: str, args: Any, timeout: float | None) -> Any:
            self.calls.append(op)
            return inner(op, args, timeout)

        transport.call = call  # type: ignore[method-assign]

    def __call__(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, list[str]]:
        start = len(self.calls)
        result = fn(*args)
        return result, self.calls[start:]


@pytest.fixture(params=["inproc", "unix"])
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, mock_config: MockConfig
) -> Iterator[cs.CryptoStack]:
    if request.param == "inproc":
        with cs.create_crypto_stack(
            cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(mock_config())
        ) as s:
            yield s
        return
    with DaemonProcess(tmp_path / "d", mock_config()) as proc, proc.stack() as s:
        yield s


def keys(ctx: cs.CryptoContext, algorithm: str, perms: P) -> cs.CryptoResourceGuard:
    return ctx.create_key_management_context().generate_key(
        cs.GenerateKeyParams().set_algorithm(algorithm).set_permissions(perms | P.EXPORT)
    )


def cipher(ctx: cs.CryptoContext, alg: str, key: object, direction: D) -> cs.CipherContext:
    return ctx.create_cipher_context(
        cs.CipherContextConfig().set_algorithm(alg).set_key(key).set_direction(direction)
    )


def test_every_one_shot_is_one_request(stack: cs.CryptoStack) -> None:
    count = Counted(stack)
    ctx = stack.create_crypto_context()
    message = b"one request for a whole message"
    h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
    digest, sent = count(h.single_shot, message)
    assert digest == hashlib.sha256(message).digest() and sent == ["hash.single_shot"]

    aes = keys(ctx, "AES-256", P.ENCRYPT | P.DECRYPT)
    secret = ctx.create_key_management_context().export_key(aes)
    enc, dec = cipher(ctx, "AES-256-GCM", aes, D.ENCRYPT), cipher(ctx, "AES-256-GCM", aes, D.DECRYPT)
    sealed, sent = count(enc.encrypt, IV, message, b"aad")
    assert sealed == AESGCM(secret).encrypt(IV, message, b"aad") and sent == ["cipher.single_shot"]
    opened, sent = count(dec.decrypt, IV, sealed, b"aad")
    assert opened == message and sent == ["cipher.single_shot"]

    mac_key = keys(ctx, "HMAC-SHA-256", P.SIGN | P.VERIFY | P.MAC)
    mac_secret = ctx.create_key_management_context().export_key(mac_key)
    signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(mac_key))
    tag, sent = count(signer.mac, message)
    assert tag == hmac.new(mac_secret, message, "sha256").digest() and sent == ["sign.single_shot"]
    assert count(signer.sign, message) == (tag, ["sign.single_shot"])
    verifier = ctx.create_verify_context(
        cs.VerifyContextConfig().set_algorithm("HMAC-SHA-256").set_key(mac_key)
    )
    assert count(verifier.verify, message, tag) == (True, ["verify.single_shot"])
    assert count(verifier.verify, message + b"!", tag) == (False, ["verify.single_shot"])

    ec = keys(ctx, "ECDSA-P256", P.SIGN | P.VERIFY)
    ecdsa = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(ec))
    signature, sent = count(ecdsa.sign, message)
    assert sent == ["sign.single_shot"]
    check = ctx.create_verify_context(cs.VerifyContextConfig().set_algorithm("ECDSA-P256").set_key(ec))
    assert count(check.verify, message, signature) == (True, ["verify.single_shot"])
    # The streamed calls still work on the same contexts, and agree.
    check.init()
    check.update(message)
    assert check.verify_finalize(signature)
    enc.init(IV)
    enc.update_aad(b"aad")
    assert enc.update(message) + enc.finalize() == sealed


def test_one_shots_follow_the_state_rules(stack: cs.CryptoStack) -> None:
    ctx = stack.create_crypto_context()
    aes = keys(ctx, "AES-256", P.ENCRYPT | P.DECRYPT)
    enc = cipher(ctx, "AES-256-GCM", aes, D.ENCRYPT)
    with pytest.raises(cs.CryptoError) as err:
        enc.decrypt(IV, b"x" * 32)  # an encryption context
    assert err.value.code is E.INVALID_STATE
    enc.init(IV)
    with pytest.raises(cs.CryptoError) as err:
        enc.encrypt(IV, b"x")  # a message is in progress
    assert err.value.code is E.INVALID_STATE
    enc.reset()
    with pytest.raises(cs.CryptoError) as err:
        enc.encrypt(b"short", b"x")  # the IV limits are the algorithm's
    assert err.value.code is E.INVALID_ARGUMENT
    cbc = cipher(ctx, "AES-256-CBC", aes, D.ENCRYPT)
    with pytest.raises(cs.CryptoError) as err:
        cbc.encrypt(bytes(16), b"x", b"aad")  # not an AEAD
    assert err.value.code is E.INVALID_STATE
    with pytest.raises(cs.CryptoError) as err:
        cbc.encrypt(bytes(16), "text")  # type: ignore[arg-type]
    assert err.value.code is E.INVALID_ARGUMENT
    dec = cipher(ctx, "AES-256-GCM", aes, D.DECRYPT)
    sealed = enc.encrypt(IV, b"message")
    with pytest.raises(cs.CryptoError) as err:
        dec.decrypt(IV, sealed[:-1] + bytes([sealed[-1] ^ 1]))
    assert err.value.code is E.AUTHENTICATION_FAILED
    assert dec.decrypt(IV, sealed) == b"message"  # the context is usable after a bad tag
    ec = keys(ctx, "ECDSA-P256", P.SIGN)
    signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(ec))
    with pytest.raises(cs.CryptoError) as err:
        signer.mac(b"m")  # not a MAC algorithm
    assert err.value.code is E.INVALID_STATE


def test_large_messages_fall_back_to_streaming(tmp_path: Path, mock_config: MockConfig) -> None:
    """Above what one request carries (half the daemon's frame limit) a one-shot streams the
    message in pieces under one deadline, with the same result."""
    config = mock_config(
        max_frame_size=64 * 1024, max_buffered_message=64 * 1024, connection_memory_budget=1 << 20
    )
    with DaemonProcess(tmp_path / "d", config) as proc, proc.stack() as stack:
        count = Counted(stack)
        ctx = stack.create_crypto_context()
        big = os.urandom(200_000)
        h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        digest, sent = count(h.single_shot, big)
        assert digest == hashlib.sha256(big).digest() and len(sent) > 2
        data = os.urandom(50_000)  # above the 32 KiB pieces, below max_buffered_message
        aes = keys(ctx, "AES-256", P.ENCRYPT | P.DECRYPT)
        secret = ctx.create_key_management_context().export_key(aes)
        enc = cipher(ctx, "AES-256-GCM", aes, D.ENCRYPT)
        sealed, sent = count(enc.encrypt, IV, data)
        assert sealed == AESGCM(secret).encrypt(IV, data, None) and len(sent) > 1
        assert cipher(ctx, "AES-256-GCM", aes, D.DECRYPT).decrypt(IV, sealed) == data
        with pytest.raises(cs.CryptoError) as err:
            enc.encrypt(IV, bytes(70_000))  # beyond what the daemon could ever decrypt
        assert err.value.code is E.RESOURCE_EXHAUSTED
