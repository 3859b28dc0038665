"""Latency of the oqs provider, measured in one run: direct liboqs-python, the provider
through the SDK (same process), and the public API over a real daemon (unix socket).

A benchmark, not a test: ``make bench`` runs it (``pytest -s`` on this file) and prints the
table; nothing about speed is asserted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

import pytest
from cryptostack_oqs import library
from cryptostack_oqs.provider import OQSProvider

import cryptostack_core as cs
from cryptostack_core.permissions import KeyOperationPermission as P
from cryptostack_core.resources import KeyFormat
from cryptostack_core.testing.daemon import DaemonProcess

pytestmark = pytest.mark.liboqs

MESSAGE = b"m" * 64


def median_us(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm up
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def _sdk_sign(provider: OQSProvider, algorithm: str, key: object) -> Callable[[], bytes]:
    def run() -> bytes:
        op = provider.create_signer(algorithm, key, b"")  # type: ignore[arg-type]
        op.update(MESSAGE)
        return op.finalize()
    return run


def _sdk_verify(provider: OQSProvider, algorithm: str, key: object,
                signature: bytes) -> Callable[[], bool]:
    def run() -> bool:
        op = provider.create_verifier(algorithm, key, b"")  # type: ignore[arg-type]
        op.update(MESSAGE)
        return op.finalize(signature)
    return run


def _direct_keygen(oqs: ModuleType, name: str) -> bytes:
    with oqs.Signature(name) as sig:
        public: bytes = sig.generate_keypair()
    return public


SIGNATURES = [("ML-DSA-65", 300), ("Falcon-512", 100), ("SLH-DSA-SHA2-128f", 10)]


def test_latency_direct_vs_sdk_vs_daemon(provider: OQSProvider, tmp_path: Path) -> None:
    oqs = library.import_oqs()  # never a bare `import oqs` (see cryptostack_oqs.library)
    rows: list[tuple[str, str, float, float, float | None]] = []
    daemon_numbers = _through_daemon(tmp_path)
    for algorithm, repeat in SIGNATURES:
        liboqs_name = provider.mechanisms[algorithm].liboqs
        direct = oqs.Signature(liboqs_name)
        public = direct.generate_keypair()
        signature = direct.sign(MESSAGE)
        key = provider.generate_key(algorithm, P.SIGN | P.VERIFY)
        ours = _sdk_sign(provider, algorithm, key)()
        rows.append((algorithm, "keygen",
                     median_us(partial(_direct_keygen, oqs, liboqs_name), max(repeat // 5, 3)),
                     median_us(partial(provider.generate_key, algorithm, P.SIGN),
                               max(repeat // 5, 3)),
                     daemon_numbers.get((algorithm, "keygen"))))
        rows.append((algorithm, "sign", median_us(partial(direct.sign, MESSAGE), repeat),
                     median_us(_sdk_sign(provider, algorithm, key), repeat),
                     daemon_numbers.get((algorithm, "sign"))))
        rows.append((algorithm, "verify",
                     median_us(partial(direct.verify, MESSAGE, signature, public), repeat),
                     median_us(_sdk_verify(provider, algorithm, key, ours), repeat),
                     daemon_numbers.get((algorithm, "verify"))))
        direct.free()
    kem = oqs.KeyEncapsulation("ML-KEM-768")
    public = kem.generate_keypair()
    ciphertext, _ = kem.encap_secret(public)
    pair = provider.generate_key("ML-KEM-768", P.ENCAPSULATE | P.DECAPSULATE)
    our_ct, _ = provider.encapsulate("ML-KEM-768", pair, P.DERIVE)
    rows.append(("ML-KEM-768", "keygen",
                 median_us(lambda: oqs.KeyEncapsulation("ML-KEM-768").generate_keypair(), 100),
                 median_us(lambda: provider.generate_key("ML-KEM-768", P.NONE), 100),
                 daemon_numbers.get(("ML-KEM-768", "keygen"))))
    rows.append(("ML-KEM-768", "encapsulate", median_us(lambda: kem.encap_secret(public), 300),
                 median_us(lambda: provider.encapsulate("ML-KEM-768", pair, P.DERIVE), 300),
                 daemon_numbers.get(("ML-KEM-768", "encapsulate"))))
    rows.append(("ML-KEM-768", "decapsulate", median_us(lambda: kem.decap_secret(ciphertext),
                                                        300),
                 median_us(lambda: provider.decapsulate("ML-KEM-768", pair, our_ct, P.DERIVE),
                           300),
                 daemon_numbers.get(("ML-KEM-768", "decapsulate"))))
    kem.free()

    print("\nmedian latency (us)          liboqs-python   provider SDK   daemon (unix socket)")
    for algorithm, operation, direct_us, sdk_us, daemon_us in rows:
        through = f"{daemon_us:12.0f}" if daemon_us is not None else f"{'-':>12}"
        print(f"  {algorithm:18} {operation:11} {direct_us:10.1f} {sdk_us:14.1f} {through}")


def _through_daemon(tmp_path: Path) -> dict[tuple[str, str], float]:
    numbers: dict[tuple[str, str], float] = {}
    config = {"providers": [{"name": "oqs", "id": 3, "options": {}}]}
    with DaemonProcess(tmp_path / "daemon", config) as daemon, daemon.stack() as stack:
        with stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            for algorithm, repeat in SIGNATURES:
                def keygen(a: str = algorithm) -> None:
                    km.generate_key(cs.GenerateKeyParams().set_algorithm(a)).release()
                numbers[(algorithm, "keygen")] = median_us(keygen, max(repeat // 10, 3))
                key = km.generate_key(cs.GenerateKeyParams().set_algorithm(algorithm))
                signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm(algorithm)
                                                 .set_key(key))
                verifier = ctx.create_verify_context(cs.VerifyContextConfig()
                                                     .set_algorithm(algorithm).set_key(key))
                signature = signer.sign(MESSAGE)
                numbers[(algorithm, "sign")] = median_us(partial(signer.sign, MESSAGE),
                                                         repeat // 2)
                numbers[(algorithm, "verify")] = median_us(
                    partial(verifier.verify, MESSAGE, signature), repeat // 2)
                signer.close()
                verifier.close()
            numbers[("ML-KEM-768", "keygen")] = median_us(
                lambda: km.generate_key(cs.GenerateKeyParams().set_algorithm("ML-KEM-768"))
                .release(), 30)
            pair = km.generate_key(cs.GenerateKeyParams().set_algorithm("ML-KEM-768"))
            kem = ctx.create_kem_context(cs.KemContextConfig().set_algorithm("ML-KEM-768")
                                         .set_key(pair))
            ciphertext, secret = kem.encapsulate()
            secret.release()
            numbers[("ML-KEM-768", "encapsulate")] = median_us(
                lambda: kem.encapsulate()[1].release(), 100)
            numbers[("ML-KEM-768", "decapsulate")] = median_us(
                lambda: kem.decapsulate(ciphertext).release(), 100)
            assert km.export_public_key(pair, KeyFormat.RAW)
    return numbers
