"""Latency of the provider (direct SDK calls) against tpm2-pytss used directly, one run.

Both talk to the same swtpm one after the other (it serves one client at a time). The
provider adds a pipe round trip to its worker process per call. A benchmark, not a test:
``make bench`` runs it (``pytest -s`` on this file) and prints the figures; nothing about
speed is asserted.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from cryptostack_tpm2.provider import TPM2Provider
from cryptostack_tpm2.templates import key_template, primary_template
from cryptostack_tpm2.testing import Swtpm, direct_esapi

import cryptostack_core as cs
from cryptostack_core.permissions import KeyOperationPermission as P
from cryptostack_core.testing.daemon import DaemonProcess

ROUNDS = 300
MESSAGE = b"m" * 64


def _median_us(fn: Callable[[], object]) -> float:
    for _ in range(20):  # warm up (key loaded, caches filled)
        fn()
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def test_bench_provider_latency_against_direct_tpm2_pytss(
        fresh_swtpm: Swtpm, make_provider: Callable[..., TPM2Provider], tmp_path: Path) -> None:
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_RH, TPM2_ST
    from tpm2_pytss.types import TPMT_SIG_SCHEME, TPMT_TK_HASHCHECK

    figures: dict[str, float] = {}
    with direct_esapi(fresh_swtpm) as ectx:
        figures["direct SHA-256 64 B"] = _median_us(
            lambda: ectx.hash(MESSAGE, TPM2_ALG.SHA256, ESYS_TR.NULL))
        primary, *_ = ectx.create_primary(None, primary_template("ecc"), ESYS_TR.OWNER)
        private, public, *_ = ectx.create(primary, None, key_template("ECDSA-P256", P.SIGN))
        key = ectx.load(primary, private, public)
        scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
        scheme.details.any.hashAlg = TPM2_ALG.SHA256
        ticket = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)
        figures["direct ECDSA-P256 sign"] = _median_us(
            lambda: ectx.sign(key, hashlib.sha256(MESSAGE).digest(), scheme, ticket))
        ectx.flush_context(key)
        ectx.flush_context(primary)

    tpm = make_provider(fresh_swtpm)

    def provider_hash() -> bytes:
        op = tpm.create_hash("SHA-256")
        op.update(MESSAGE)
        return op.finalize()

    tpm_key = tpm.generate_key("ECDSA-P256", P.SIGN)

    def provider_sign() -> bytes:
        op = tpm.create_signer("ECDSA-P256", tpm_key, b"")
        op.update(MESSAGE)
        return op.finalize()

    figures["provider SHA-256 64 B"] = _median_us(provider_hash)
    figures["provider ECDSA-P256 sign"] = _median_us(provider_sign)
    tpm.close()  # swtpm serves one client at a time: the daemon's provider comes next

    options = {"tcti": fresh_swtpm.tcti, "reset_lockout": True}
    config = {"providers": [{"name": "tpm2", "id": 4, "options": options}]}
    with DaemonProcess(tmp_path / "daemon", config) as daemon, daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        hashing = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        key = ctx.create_key_management_context().generate_key(
            cs.GenerateKeyParams().set_algorithm("ECDSA-P256").set_provider(4))
        signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("ECDSA-P256")
                                         .set_key(key))
        figures["daemon SHA-256 64 B"] = _median_us(lambda: hashing.single_shot(MESSAGE))
        figures["daemon ECDSA-P256 sign"] = _median_us(lambda: signer.sign(MESSAGE))
    print("\ntpm2 (swtpm) latency, medians")
    for name, value in figures.items():
        print(f"  {name:28} {value:7.0f} us")
    for operation in ("SHA-256 64 B", "ECDSA-P256 sign"):
        direct = figures[f"direct {operation}"]
        print(f"  {operation:28} provider/direct {figures[f'provider {operation}'] / direct:5.2f}x"
              f"   daemon/direct {figures[f'daemon {operation}'] / direct:5.2f}x")
