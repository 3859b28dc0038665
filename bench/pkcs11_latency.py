"""Latency of a 64-byte AES-256-GCM encryption and a 64-byte SHA-256 on a private SoftHSM2
token: python-pkcs11 in-process, the provider SDK (token worker process), and the public API
(``inproc://`` and a daemon over its socket), with the software provider for reference.

Run by ``make bench`` (or ``.venv/bin/python bench/pkcs11_latency.py [-n 3000]``).
Prints the median and the 99th percentile per operation, in microseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cryptostack_core as cs
from cryptostack_core.permissions import KeyOperationPermission as P
from cryptostack_core.provider import ProviderEnvironment
from cryptostack_core.resources import CipherDirection
from cryptostack_core.testing.daemon import DaemonProcess

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
DATA = bytes(range(64))
IV = bytes(12)


def measure(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """(median, p99) of ``n`` calls in microseconds, after a warm-up."""
    for _ in range(min(200, n)):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def make_token(base: Path) -> tuple[str, str]:
    tokendir = base / "tokens"
    tokendir.mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokendir}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    os.environ["BENCH_PIN"] = "1234"
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin",
                    "1234", "--so-pin", "5678"], check=True, capture_output=True)
    return "bench", "1234"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3000, help="iterations per measurement")
    args = parser.parse_args()
    n = args.n
    rows: list[tuple[str, str, tuple[float, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        label, pin = make_token(base)
        options = {"module": MODULE, "token_label": label, "pin_env": "BENCH_PIN"}

        # python-pkcs11, in this process
        import pkcs11
        from pkcs11 import GCMParams, KeyType, Mechanism, MechanismFlag

        session = pkcs11.lib(MODULE).get_token(token_label=label).open(user_pin=pin)
        key = session.generate_key(KeyType.AES, 256,
                                   capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT)
        rows.append(("python-pkcs11 in-process", "AES-256-GCM 64 B", measure(
            lambda: key.encrypt(DATA, mechanism=Mechanism.AES_GCM,
                                mechanism_param=GCMParams(IV)), n)))
        rows.append(("python-pkcs11 in-process", "SHA-256 64 B", measure(
            lambda: session.digest(DATA, mechanism=Mechanism.SHA256), n)))

        # the provider SDK: calls go to the token worker process
        from cryptostack_pkcs11.provider import PKCS11Provider

        provider = PKCS11Provider(5, options, ProviderEnvironment(base, base))
        provider.start()
        pkey = provider.generate_key("AES-256", P.ENCRYPT | P.DECRYPT)

        def sdk_gcm() -> bytes:
            op = provider.create_cipher("AES-256-GCM", pkey, CipherDirection.ENCRYPT, IV, 16)
            return op.update(DATA) + op.finalize()

        def sdk_sha() -> bytes:
            op = provider.create_hash("SHA-256")
            op.update(DATA)
            return op.finalize()

        rows.append(("provider SDK (worker)", "AES-256-GCM 64 B", measure(sdk_gcm, n)))
        rows.append(("provider SDK (worker)", "SHA-256 64 B", measure(sdk_sha, n)))
        provider.close()

        config = {"providers": [{"name": "pkcs11", "id": 5, "options": options},
                                {"name": "openssl", "id": 2, "options": {}}]}

        def api_rows(where: str, stack: cs.CryptoStack) -> None:
            ctx = stack.create_crypto_context()
            km = ctx.create_key_management_context()
            for provider_id, name in ((5, "pkcs11"), (2, "openssl")):
                key = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256")
                                      .set_permissions(P.ENCRYPT | P.DECRYPT)
                                      .set_provider(provider_id))
                enc = ctx.create_cipher_context(
                    cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(key)
                    .set_direction(cs.CipherDirection.ENCRYPT))
                hasher = ctx.create_hash_context(
                    cs.HashContextConfig().set_algorithm("SHA-256").set_provider(provider_id))

                def gcm(enc: cs.CipherContext = enc) -> bytes:
                    enc.init(IV)
                    return enc.update(DATA) + enc.finalize()

                rows.append((f"{where}, {name}", "AES-256-GCM 64 B", measure(gcm, n)))
                rows.append((f"{where}, {name}", "SHA-256 64 B",
                             measure(lambda h=hasher: h.single_shot(DATA), n)))
            ctx.close()

        inproc = cs.create_crypto_stack(cs.CryptoStackConfig()
                                        .set_connection_endpoint("inproc://")
                                        .set_daemon_config({**config, "daemon": {
                                            "keystore": str(base / "inproc.sqlite3")}}))
        with inproc:
            api_rows("API inproc://", inproc)
        with DaemonProcess(base / "daemon", config) as daemon, daemon.stack() as stack:
            api_rows("API unix socket", stack)

    width = max(len(r[0]) for r in rows)
    print(f"{'path':{width}}  {'operation':18} {'median us':>10} {'p99 us':>9}")
    for where, what, (median, p99) in rows:
        print(f"{where:{width}}  {what:18} {median:10.1f} {p99:9.1f}")
    print(f"({n} iterations each; {os.cpu_count()} CPUs; Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
