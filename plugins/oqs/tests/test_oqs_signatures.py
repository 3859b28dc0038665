"""Signatures on the oqs provider: round trips and tamper checks for every ML-DSA, SLH-DSA
and Falcon set liboqs offers, context strings, exact sizes, independent cross-checks of
SLH-DSA with PQClean (pqcrypto), and SLH-DSA "s" signing not blocking other work."""

from __future__ import annotations

import threading
import time

import pytest
from cryptostack_oqs.provider import OQSProvider
from pqcrypto.sign import (
    slh_dsa_sha2_128f,
    slh_dsa_sha2_128s,
    slh_dsa_sha2_192f,
    slh_dsa_sha2_192s,
    slh_dsa_sha2_256f,
    slh_dsa_sha2_256s,
    slh_dsa_shake_128f,
    slh_dsa_shake_128s,
    slh_dsa_shake_192f,
    slh_dsa_shake_192s,
    slh_dsa_shake_256f,
    slh_dsa_shake_256s,
)

from cryptostack_core.sdk import CryptoError, ErrorCode, KeyFormat, ProviderKey
from cryptostack_core.sdk import KeyOperationPermission as P

pytestmark = pytest.mark.liboqs

PQCLEAN_SLH = {
    "SLH-DSA-SHA2-128s": slh_dsa_sha2_128s,
    "SLH-DSA-SHA2-128f": slh_dsa_sha2_128f,
    "SLH-DSA-SHA2-192s": slh_dsa_sha2_192s,
    "SLH-DSA-SHA2-192f": slh_dsa_sha2_192f,
    "SLH-DSA-SHA2-256s": slh_dsa_sha2_256s,
    "SLH-DSA-SHA2-256f": slh_dsa_sha2_256f,
    "SLH-DSA-SHAKE-128s": slh_dsa_shake_128s,
    "SLH-DSA-SHAKE-128f": slh_dsa_shake_128f,
    "SLH-DSA-SHAKE-192s": slh_dsa_shake_192s,
    "SLH-DSA-SHAKE-192f": slh_dsa_shake_192f,
    "SLH-DSA-SHAKE-256s": slh_dsa_shake_256s,
    "SLH-DSA-SHAKE-256f": slh_dsa_shake_256f,
}
SLOW = [name for name in PQCLEAN_SLH if name.endswith("s")]
FAST_SLH = [name for name in PQCLEAN_SLH if name.endswith("f")]
MESSAGE = b"post-quantum message \x00\xff" * 3


def sign(
    provider: OQSProvider, algorithm: str, key: ProviderKey, message: bytes, context: bytes = b""
) -> bytes:
    op = provider.create_signer(algorithm, key, context)
    op.update(message[:7])
    op.update(memoryview(message)[7:])  # the daemon may hand over shared-memory views
    return op.finalize()


def verify(
    provider: OQSProvider,
    algorithm: str,
    key: ProviderKey,
    message: bytes,
    signature: bytes,
    context: bytes = b"",
) -> bool:
    op = provider.create_verifier(algorithm, key, context)
    op.update(message)
    return op.finalize(signature)


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


def assert_tamper_checks(
    provider: OQSProvider,
    algorithm: str,
    key: ProviderKey,
    other: ProviderKey,
    signature: bytes,
    context: bytes,
) -> None:
    """Flipped message bit, flipped signature bits, wrong context, wrong key: all False."""

    def check(msg: bytes, sig: bytes, ctx: bytes = context, k: ProviderKey = key) -> bool:
        return verify(provider, algorithm, k, msg, sig, ctx)

    assert check(MESSAGE, signature)
    assert not check(flip(MESSAGE, 5, 3), signature)
    for index in (0, len(signature) // 2, len(signature) - 1):
        assert not check(MESSAGE, flip(signature, index, 7)), index
    assert not check(MESSAGE, signature[:-1])
    assert not check(MESSAGE, signature + b"\x00")
    assert not check(MESSAGE, b"")
    assert not check(MESSAGE, signature, k=other)
    if provider.mechanisms[algorithm].context:
        assert not check(MESSAGE, signature, ctx=flip(context, -1) if context else b"x")
        assert not check(MESSAGE, signature, ctx=context[:-1] if context else b"\x00")
    # a public key alone verifies too
    public = provider.import_key(
        algorithm, provider.export_public_key(key, KeyFormat.RAW), KeyFormat.RAW, P.VERIFY
    )
    assert check(MESSAGE, signature, k=public)


@pytest.mark.parametrize("algorithm", ["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"])
def test_mldsa(provider: OQSProvider, algorithm: str) -> None:
    key, other = (provider.generate_key(algorithm, P.SIGN | P.VERIFY) for _ in range(2))
    for context in (b"", b"app context", bytes(range(255))):
        signature = sign(provider, algorithm, key, MESSAGE, context)
        assert len(signature) == provider.signature_size(algorithm, key)  # exact for ML-DSA
        assert_tamper_checks(provider, algorithm, key, other, signature, context)
    empty = sign(provider, algorithm, key, b"")
    assert verify(provider, algorithm, key, b"", empty)
    # hedged signing: two signatures of one message differ, both verify
    assert sign(provider, algorithm, key, MESSAGE) != sign(provider, algorithm, key, MESSAGE)
    with pytest.raises(CryptoError) as exc:
        provider.create_signer(algorithm, key, bytes(256))
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize("algorithm", ["Falcon-512", "Falcon-1024"])
def test_falcon(provider: OQSProvider, algorithm: str) -> None:
    key, other = (provider.generate_key(algorithm, P.SIGN | P.VERIFY) for _ in range(2))
    maximum = provider.signature_size(algorithm, key)
    assert maximum == {"Falcon-512": 752, "Falcon-1024": 1462}[algorithm]
    lengths = set()
    for _ in range(3):
        signature = sign(provider, algorithm, key, MESSAGE)
        assert len(signature) <= maximum  # Falcon signatures vary; the size is the maximum
        lengths.add(len(signature))
    assert_tamper_checks(provider, algorithm, key, other, signature, b"")
    assert not verify(provider, algorithm, key, MESSAGE, signature + bytes(maximum))
    for create in (provider.create_signer, provider.create_verifier):
        with pytest.raises(CryptoError) as exc:
            create(algorithm, key, b"ctx")
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT and "context" in exc.value.message


@pytest.mark.parametrize("algorithm", FAST_SLH)
def test_slhdsa_fast_sets(provider: OQSProvider, algorithm: str) -> None:
    key, other = (provider.generate_key(algorithm, P.SIGN | P.VERIFY) for _ in range(2))
    context = b"slh context"
    signature = sign(provider, algorithm, key, MESSAGE, context)
    assert len(signature) == provider.signature_size(algorithm, key)
    assert_tamper_checks(provider, algorithm, key, other, signature, context)
    _cross_check_with_pqclean(provider, algorithm, key, signature, context)


def _cross_check_with_pqclean(
    provider: OQSProvider, algorithm: str, key: ProviderKey, signature: bytes, context: bytes
) -> None:
    """PQClean verifies the provider's signature, and the provider verifies PQClean's."""
    module = PQCLEAN_SLH[algorithm]
    public = provider.export_public_key(key, KeyFormat.RAW)
    module.verify(public, MESSAGE, signature, context=context)  # raises if invalid
    theirs_public, theirs_secret = module.keygen()
    theirs = module.sign(theirs_secret, MESSAGE, context=context)
    imported = provider.import_key(algorithm, theirs_public, KeyFormat.RAW, P.VERIFY)
    assert verify(provider, algorithm, imported, MESSAGE, theirs, context)
    assert not verify(provider, algorithm, imported, MESSAGE, theirs, context + b"x")


def test_slhdsa_small_sets_sign_once_each_concurrently(provider: OQSProvider) -> None:
    """The six "s" sets, one signature each, signed in parallel threads; then the tamper
    checks (verification is fast) and the PQClean cross-check. Prints the timings."""
    keys = {name: provider.generate_key(name, P.SIGN | P.VERIFY) for name in SLOW}
    others = {name: provider.generate_key(name, P.VERIFY) for name in SLOW}
    signatures: dict[str, bytes] = {}
    seconds: dict[str, float] = {}

    def run(name: str) -> None:
        started = time.perf_counter()
        signatures[name] = sign(provider, name, keys[name], MESSAGE, b"ctx")
        seconds[name] = time.perf_counter() - started

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(name,)) for name in SLOW]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    print("\nSLH-DSA 's' signing, six threads at once:")
    for name in SLOW:
        print(f"  {name:20} {seconds[name] * 1000:8.0f} ms  {len(signatures[name])} bytes")
    print(f"  wall {wall * 1000:.0f} ms for {sum(seconds.values()) * 1000:.0f} ms of signing")
    for name in SLOW:
        assert len(signatures[name]) == provider.signature_size(name, keys[name])
        assert_tamper_checks(provider, name, keys[name], others[name], signatures[name], b"ctx")
        PQCLEAN_SLH[name].verify(
            provider.export_public_key(keys[name], KeyFormat.RAW), MESSAGE, signatures[name], context=b"ctx"
        )


def test_slow_signing_holds_no_lock(provider: OQSProvider) -> None:
    """While SLH-DSA-SHAKE-192s signs (over a second), ML-DSA signatures in another thread
    keep completing: no provider lock, and the GIL is released inside liboqs. (A lock would
    let at most one through before the slow signature ends.)"""
    slow_key = provider.generate_key("SLH-DSA-SHAKE-192s", P.SIGN)
    fast_key = provider.generate_key("ML-DSA-65", P.SIGN | P.VERIFY)
    signing, done = threading.Event(), threading.Event()
    slow_time: list[float] = []

    def slow() -> None:
        started = time.perf_counter()
        signing.set()
        sign(provider, "SLH-DSA-SHAKE-192s", slow_key, MESSAGE)
        slow_time.append(time.perf_counter() - started)
        done.set()

    thread = threading.Thread(target=slow)
    thread.start()
    assert signing.wait(60)
    count = 0
    while not done.is_set():
        signature = sign(provider, "ML-DSA-65", fast_key, MESSAGE)
        count += 1
    thread.join()
    assert verify(provider, "ML-DSA-65", fast_key, MESSAGE, signature)
    print(f"\n{count} ML-DSA-65 signatures during one {slow_time[0] * 1000:.0f} ms SLH-DSA signature")
    assert count >= 5, count


def test_key_algorithm_must_match(provider: OQSProvider) -> None:
    key = provider.generate_key("ML-DSA-44", P.SIGN)
    with pytest.raises(CryptoError) as exc:
        provider.create_signer("ML-DSA-65", key, b"")
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    public = provider.import_key(
        "ML-DSA-44", provider.export_public_key(key, KeyFormat.RAW), KeyFormat.RAW, P.VERIFY
    )
    with pytest.raises(CryptoError) as exc:
        provider.create_signer("ML-DSA-44", public, b"")
    assert exc.value.code is ErrorCode.KEY_OPERATION_NOT_PERMITTED
    with pytest.raises(CryptoError) as exc:
        provider.create_signer("ML-KEM-768", key, b"")
    assert exc.value.code is ErrorCode.UNSUPPORTED_ALGORITHM
