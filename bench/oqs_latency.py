"""oqs provider latency, one run: key generation, signing and verification (64-byte message)
per signature algorithm, and ML-KEM-768 key generation, encapsulation and decapsulation,
through liboqs-python in this process (the direct library), the provider SDK (same process),
and the public API (``inproc://`` and a daemon over its unix socket).

liboqs is looked up the way the provider does (``cryptostack_oqs.library``: OQS_INSTALL_PATH,
the linker cache, LD_LIBRARY_PATH, standard prefixes); without it this prints
"liboqs not found — skipped" and exits 0. Run by ``make bench`` (or
``.venv/bin/python bench/oqs_latency.py [-n 300]``). Prints medians and p99 in µs with ratios
to the direct library and to the IPC floor; slow operations get fewer calls (time budget).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path
from types import ModuleType

from cryptostack_oqs import library
from cryptostack_oqs.provider import OQSProvider
from latency import LatencyTable, ipc_floor, measure

import cryptostack_core as cs
from cryptostack_core.sdk import CryptoError, ProviderEnvironment, ProviderKey
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_core.testing.daemon import DaemonProcess

MESSAGE = b"m" * 64
SIGNATURES = ("ML-DSA-65", "Falcon-512", "SLH-DSA-SHA2-128f")
KEM = "ML-KEM-768"
DIRECT = "liboqs-python in-process (direct)"
OQS_ID = 3
BUDGET = 0.8
"""Seconds of timed calls per measurement at most (SLH-DSA signing takes tens of ms)."""


def _direct_keygen(oqs: ModuleType, name: str) -> bytes:
    with oqs.Signature(name) as sig:
        public: bytes = sig.generate_keypair()
    return public


def direct_rows(
    table: LatencyTable, oqs: ModuleType, provider: OQSProvider, algorithms: list[str], kem: bool, n: int
) -> None:
    """liboqs-python objects used as an application would (one per key pair)."""
    for algorithm in algorithms:
        name = provider.mechanisms[algorithm].liboqs
        with oqs.Signature(name) as signer:
            public = signer.generate_keypair()
            signature = signer.sign(MESSAGE)
            table.add(f"{algorithm} keygen", DIRECT, measure(partial(_direct_keygen, oqs, name), n, BUDGET))
            table.add(f"{algorithm} sign", DIRECT, measure(partial(signer.sign, MESSAGE), n, BUDGET))
            table.add(
                f"{algorithm} verify",
                DIRECT,
                measure(partial(signer.verify, MESSAGE, signature, public), n, BUDGET),
            )
    if kem:
        name = provider.mechanisms[KEM].liboqs

        def keygen() -> bytes:
            with oqs.KeyEncapsulation(name) as fresh:
                public: bytes = fresh.generate_keypair()
            return public

        with oqs.KeyEncapsulation(name) as pair:
            public = pair.generate_keypair()
            ciphertext, _ = pair.encap_secret(public)
            table.add(f"{KEM} keygen", DIRECT, measure(keygen, n, BUDGET))
            table.add(f"{KEM} encapsulate", DIRECT, measure(partial(pair.encap_secret, public), n, BUDGET))
            table.add(
                f"{KEM} decapsulate", DIRECT, measure(partial(pair.decap_secret, ciphertext), n, BUDGET)
            )


def sdk_rows(table: LatencyTable, provider: OQSProvider, algorithms: list[str], kem: bool, n: int) -> None:
    """The provider SDK in this process: the provider's own per-call liboqs objects."""
    where = "provider SDK (in-process)"
    for algorithm in algorithms:
        key = provider.generate_key(algorithm, P.SIGN | P.VERIFY)

        def sign(algorithm: str = algorithm, key: ProviderKey = key) -> bytes:
            op = provider.create_signer(algorithm, key, b"")
            op.update(MESSAGE)
            return op.finalize()

        signature = sign()

        def verify(algorithm: str = algorithm, key: ProviderKey = key, signature: bytes = signature) -> bool:
            op = provider.create_verifier(algorithm, key, b"")
            op.update(MESSAGE)
            return op.finalize(signature)

        table.add(
            f"{algorithm} keygen",
            where,
            measure(partial(provider.generate_key, algorithm, P.SIGN | P.VERIFY), n, BUDGET),
        )
        table.add(f"{algorithm} sign", where, measure(sign, n, BUDGET))
        table.add(f"{algorithm} verify", where, measure(verify, n, BUDGET))
    if kem:
        pair = provider.generate_key(KEM, P.ENCAPSULATE | P.DECAPSULATE)
        ciphertext, _ = provider.encapsulate(KEM, pair, P.DERIVE)
        table.add(
            f"{KEM} keygen",
            where,
            measure(partial(provider.generate_key, KEM, P.ENCAPSULATE | P.DECAPSULATE), n, BUDGET),
        )
        table.add(
            f"{KEM} encapsulate",
            where,
            measure(partial(provider.encapsulate, KEM, pair, P.DERIVE), n, BUDGET),
        )
        table.add(
            f"{KEM} decapsulate",
            where,
            measure(partial(provider.decapsulate, KEM, pair, ciphertext, P.DERIVE), n, BUDGET),
        )


def api_rows(
    table: LatencyTable, where: str, stack: cs.CryptoStack, algorithms: list[str], kem: bool, n: int
) -> None:
    """The public API; every key and secret handle made while timing is released."""
    with stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()

        def keygen(params: cs.GenerateKeyParams) -> None:
            km.generate_key(params).release()

        for algorithm in algorithms:
            params = (
                cs.GenerateKeyParams()
                .set_algorithm(algorithm)
                .set_permissions(P.SIGN | P.VERIFY)
                .set_provider(OQS_ID)
            )
            key = km.generate_key(params)
            signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm(algorithm).set_key(key))
            verifier = ctx.create_verify_context(
                cs.VerifyContextConfig().set_algorithm(algorithm).set_key(key)
            )
            signature = signer.sign(MESSAGE)
            table.add(f"{algorithm} keygen", where, measure(partial(keygen, params), n, BUDGET))
            table.add(f"{algorithm} sign", where, measure(partial(signer.sign, MESSAGE), n, BUDGET))
            table.add(
                f"{algorithm} verify", where, measure(partial(verifier.verify, MESSAGE, signature), n, BUDGET)
            )
            signer.close()
            verifier.close()
            key.release()
        if kem:
            params = (
                cs.GenerateKeyParams()
                .set_algorithm(KEM)
                .set_permissions(P.ENCAPSULATE | P.DECAPSULATE)
                .set_provider(OQS_ID)
            )
            pair = km.generate_key(params)
            kem_ctx = ctx.create_kem_context(cs.KemContextConfig().set_algorithm(KEM).set_key(pair))
            ciphertext, secret = kem_ctx.encapsulate()
            secret.release()
            table.add(f"{KEM} keygen", where, measure(partial(keygen, params), n, BUDGET))
            table.add(
                f"{KEM} encapsulate", where, measure(lambda: kem_ctx.encapsulate()[1].release(), n, BUDGET)
            )
            table.add(
                f"{KEM} decapsulate",
                where,
                measure(lambda: kem_ctx.decapsulate(ciphertext).release(), n, BUDGET),
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=300, help="timed calls per measurement at most")
    args = parser.parse_args()
    n = args.n
    if library.locate() is None:
        print("liboqs not found — skipped")
        return 0
    floor = ipc_floor()  # before liboqs is loaded: the echo process is forked
    try:
        oqs = library.import_oqs()  # never a bare `import oqs` (see cryptostack_oqs.library)
    except CryptoError as exc:  # found but unusable (e.g. not the 0.16 series)
        print(f"liboqs unusable — skipped: {exc}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "sdk").mkdir()
        provider = OQSProvider(OQS_ID, {}, ProviderEnvironment(base / "sdk", base / "sdk"))
        provider.start()
        try:
            offered = provider.mechanisms
            algorithms = [a for a in SIGNATURES if a in offered]
            kem = KEM in offered
            table = LatencyTable(
                f"oqs provider on liboqs {oqs.oqs_version()} ({library.loaded_path(oqs)}), µs", DIRECT, floor
            )
            direct_rows(table, oqs, provider, algorithms, kem, n)
            sdk_rows(table, provider, algorithms, kem, n)
        finally:
            provider.close()
        config = {"providers": [{"name": "oqs", "id": OQS_ID, "options": {}}]}
        inproc_config = {
            **config,
            "daemon": {"keystore": str(base / "inproc.sqlite3"), "state_dir": str(base / "inproc-state")},
        }
        with cs.create_crypto_stack(
            cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(inproc_config)
        ) as stack:
            api_rows(table, "API inproc://", stack, algorithms, kem, n)
        with DaemonProcess(base / "daemon", config) as daemon, daemon.stack() as stack:
            api_rows(table, "API daemon (unix socket)", stack, algorithms, kem, n)
    print(table.render())
    missing = [a for a in (*SIGNATURES, KEM) if a not in offered]
    if missing:
        print(f"not offered by this liboqs build: {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
