"""Nothing leaks when the caller forgets (issue 11, finding 4): a context or guard that
becomes unreachable unclosed is released with the stack's next request, with a
``ResourceWarning`` like an unclosed file."""

from __future__ import annotations

import gc
import os
import time
import warnings

import pytest

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess


def _mine(stack: cs.CryptoStack) -> dict[str, int]:
    clients = {c["pid"]: c for c in stack.status()["clients"]}
    return clients[os.getpid()]


def test_ten_thousand_dropped_contexts_never_exhaust_the_daemon(daemon: DaemonProcess) -> None:
    """The usual one-context-per-message loop, without close(): at message 257 the daemon's
    per-client limit (256 contexts) used to answer RESOURCE_EXHAUSTED."""
    with daemon.stack() as stack, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        ctx = stack.create_crypto_context()
        config = cs.HashContextConfig().set_algorithm("SHA-256")
        started = time.monotonic()
        for n in range(10_000):
            h = ctx.create_hash_context(config)  # the previous one is dropped here
            assert len(h.single_shot(n.to_bytes(4, "big"))) == 32
        elapsed = time.monotonic() - started
        del h
        gc.collect()
        stack.ping()  # carries the last queued close
        assert _mine(stack)["contexts"] == 0
    dropped = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(dropped) == 10_000
    assert "never closed" in str(dropped[0].message)
    print(f"10,000 dropped contexts: {elapsed:.2f} s")


def test_a_dropped_context_or_guard_warns_and_is_released(any_stack: cs.CryptoStack) -> None:
    stack = any_stack
    ctx = stack.create_crypto_context()
    km = ctx.create_key_management_context()
    key = km.generate_key(cs.GenerateKeyParams().set_algorithm("HMAC-SHA-256"))
    signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(key))
    assert len(signer.sign(b"m")) == 32
    assert _mine(stack)["contexts"] == 1 and _mine(stack)["guards"] == 1
    with pytest.warns(ResourceWarning, match="never closed"):
        del signer
        gc.collect()
    with pytest.warns(ResourceWarning, match="never released"):
        del key
        gc.collect()
    counts = _mine(stack)  # this request carried the close and the release
    assert counts["contexts"] == 0 and counts["guards"] == 0


def test_closed_contexts_and_a_closed_stack_do_not_warn(any_stack: cs.CryptoStack) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        ctx = any_stack.create_crypto_context()
        with ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256")) as h:
            h.single_shot(b"x")
        key = ctx.create_key_management_context().generate_key(
            cs.GenerateKeyParams().set_algorithm("AES-256")
        )
        key.release()
        del h, key
        gc.collect()
        left = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        any_stack.close()  # closing the stack frees everything: nothing to warn about
        del left
        gc.collect()
