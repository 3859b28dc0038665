"""`make bench`: cryptostack against the in-process library and the IPC floor, one run.

Prints absolute figures and the ratios the design budget is stated in:
  * raw unix-socket ping-pong between two processes (the IPC floor);
  * in-process pyca `cryptography` (SHA-256, AES-256-GCM, HMAC);
  * the same work through ``inproc://`` and through a daemon subprocess: every one-shot call
    on a small message, the streamed calls, 1 MiB of SHA-256 and AES-256-GCM;
  * throughput of 1, 2, 4, 8, 16 and 64 concurrent callers: threads sharing one blocking
    stack, asyncio tasks on one async stack, separate client processes.
The targets of issue 14 are printed with their ratio and whether it is met. Nothing here is
asserted; it is measured. ``--quick`` shortens every measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing import Process
from pathlib import Path
from typing import Any

import cryptostack_core as cs
from cryptostack_core.server.discovery import available_provider_names
from cryptostack_core.testing.daemon import DaemonProcess

SMALL = b"m" * 64
MIB = os.urandom(1 << 20)
IV = bytes(12)
SECONDS = 1.0
P = cs.KeyOperationPermission


def per_call(fn: Callable[[], object], seconds: float | None = None, min_calls: int = 50) -> float:
    """Median seconds per call over several timed batches."""
    seconds = SECONDS if seconds is None else seconds
    fn()
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        n = 0
        start = time.perf_counter()
        while n < min_calls:
            fn()
            n += 1
        samples.append((time.perf_counter() - start) / n)
    return statistics.median(samples)


def _echo_server(path: str) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    conn, _ = srv.accept()
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


def ipc_floor(tmp: Path) -> float:
    """Round trip of a 64-byte message between two processes over a unix socket."""
    path = str(tmp / "echo.sock")
    proc = Process(target=_echo_server, args=(path,), daemon=True)
    proc.start()
    while not os.path.exists(path):
        time.sleep(0.01)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)

    def rt() -> None:
        client.sendall(SMALL)
        client.recv(65536)

    result = per_call(rt)
    client.close()
    proc.join(2)
    return result


def in_process() -> dict[str, float]:
    """pyca/cryptography in this process: the direct library."""
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    def sha(data: bytes) -> Callable[[], object]:
        def run() -> object:
            h = hashes.Hash(hashes.SHA256())
            h.update(data)
            return h.finalize()

        return run

    def mac() -> bytes:
        h = hmac.HMAC(b"k" * 32, hashes.SHA256())
        h.update(SMALL)
        return h.finalize()

    gcm = AESGCM(os.urandom(32))
    sealed = gcm.encrypt(IV, SMALL, None)
    return {
        "sha256_64B": per_call(sha(SMALL)),
        "sha256_1MiB": per_call(sha(MIB), min_calls=5),
        "aes_gcm_64B_encrypt": per_call(lambda: gcm.encrypt(IV, SMALL, None)),
        "aes_gcm_64B_decrypt": per_call(lambda: gcm.decrypt(IV, sealed, None)),
        "aes_gcm_1MiB_encrypt": per_call(lambda: gcm.encrypt(IV, MIB, None), min_calls=10),
        "hmac_sha256_64B": per_call(mac),
    }


def through(stack: cs.CryptoStack) -> dict[str, float]:
    """Every small one-shot, the streamed calls and 1 MiB, through ``stack``."""
    ctx = stack.create_crypto_context()
    h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
    out: dict[str, float] = {}
    out["ping"] = per_call(stack.ping)
    out["sha256_64B_single_shot"] = per_call(lambda: h.single_shot(SMALL))

    def streamed() -> bytes:
        h.reset()
        h.init()
        h.update(SMALL)
        return h.finalize()

    out["sha256_64B_init_update_finalize"] = per_call(streamed)
    km = ctx.create_key_management_context()
    key = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256"))
    cipher = cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(key)
    enc = ctx.create_cipher_context(cipher.set_direction(cs.CipherDirection.ENCRYPT))
    dec = ctx.create_cipher_context(
        cs.CipherContextConfig()
        .set_algorithm("AES-256-GCM")
        .set_key(key)
        .set_direction(cs.CipherDirection.DECRYPT)
    )
    sealed = enc.encrypt(IV, SMALL)
    out["aes_gcm_64B_encrypt"] = per_call(lambda: enc.encrypt(IV, SMALL))
    out["aes_gcm_64B_decrypt"] = per_call(lambda: dec.decrypt(IV, sealed))

    def gcm_streamed() -> bytes:
        enc.init(IV)
        return enc.update(SMALL) + enc.finalize()

    out["aes_gcm_64B_init_update_finalize"] = per_call(gcm_streamed)
    mac_key = km.generate_key(cs.GenerateKeyParams().set_algorithm("HMAC-SHA-256"))
    signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(mac_key))
    verifier = ctx.create_verify_context(
        cs.VerifyContextConfig().set_algorithm("HMAC-SHA-256").set_key(mac_key)
    )
    tag = signer.mac(SMALL)
    out["hmac_sha256_64B_mac"] = per_call(lambda: signer.mac(SMALL))
    out["hmac_sha256_64B_verify"] = per_call(lambda: verifier.verify(SMALL, tag))

    def bulk() -> bytes:
        h.init()
        h.update(MIB)
        return h.finalize()

    out["sha256_1MiB"] = per_call(lambda: h.single_shot(MIB), min_calls=5)
    out["sha256_1MiB_init_update_finalize"] = per_call(bulk, min_calls=5)
    out["aes_gcm_1MiB_encrypt"] = per_call(lambda: enc.encrypt(IV, MIB), min_calls=5)
    return out


# --- concurrency ---------------------------------------------------------------------------
def _hashing_loop(stack: cs.CryptoStack, stop: float, counts: list[int], i: int) -> None:
    h = stack.create_crypto_context().create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
    n = 0
    while time.monotonic() < stop:
        h.single_shot(SMALL)
        n += 1
    counts[i] = n


def threads_sharing_one_stack(daemon: DaemonProcess, clients: int, seconds: float) -> float:
    """ops/s of ``clients`` threads on one blocking stack (one connection)."""
    counts = [0] * clients
    with daemon.stack() as stack:
        stop = time.monotonic() + seconds
        threads = [
            threading.Thread(target=_hashing_loop, args=(stack, stop, counts, i)) for i in range(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return sum(counts) / seconds


def tasks_on_one_async_stack(daemon: DaemonProcess, clients: int, seconds: float) -> float:
    """ops/s of ``clients`` asyncio tasks on one async stack (one connection)."""

    async def run() -> float:
        config = cs.CryptoStackConfig().set_connection_endpoint(daemon.endpoint)
        async with cs.create_async_crypto_stack(config) as stack:
            ctx = stack.create_crypto_context()
            counts = [0] * clients
            stop = time.monotonic() + seconds

            async def task(i: int) -> None:
                h = await ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
                n = 0
                while time.monotonic() < stop:
                    await h.single_shot(SMALL)
                    n += 1
                counts[i] = n

            await asyncio.gather(*(task(i) for i in range(clients)))
            return sum(counts) / seconds

    return asyncio.run(run())


def _process_client(endpoint: str, start: Any, seconds: float, out: Any) -> None:
    config = cs.CryptoStackConfig().set_connection_endpoint(endpoint)
    with cs.create_crypto_stack(config) as stack:
        h = stack.create_crypto_context().create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        h.single_shot(SMALL)
        start.wait()
        stop = time.monotonic() + seconds
        n = 0
        while time.monotonic() < stop:
            h.single_shot(SMALL)
            n += 1
    out.put(n)


def separate_processes(daemon: DaemonProcess, clients: int, seconds: float) -> float:
    """ops/s of ``clients`` client processes, each with its own connection."""
    mp = multiprocessing.get_context("fork")
    start, out = mp.Event(), mp.Queue()
    procs = [
        mp.Process(target=_process_client, args=(daemon.endpoint, start, seconds, out))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    time.sleep(0.3 + 0.02 * clients)  # let them connect
    start.set()
    total = sum(out.get(timeout=60 + seconds) for _ in procs)
    for p in procs:
        p.join(10)
    return total / seconds


SCALING = (1, 2, 4, 8, 16, 64)
WAYS: dict[str, Callable[[DaemonProcess, int, float], float]] = {
    "threads, one shared stack": threads_sharing_one_stack,
    "asyncio tasks, one stack": tasks_on_one_async_stack,
    "processes, a stack each": separate_processes,
}


def scaling(daemon: DaemonProcess, seconds: float) -> dict[str, dict[int, float]]:
    """Throughput of SHA-256 64 B single-shots for 1..64 concurrent callers, each way."""
    return {name: {n: way(daemon, n, seconds) for n in SCALING} for name, way in WAYS.items()}


def main() -> int:
    global SECONDS
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    args = parser.parse_args()
    if args.quick:
        SECONDS = 0.3
    provider = "openssl" if "openssl" in available_provider_names() else "mock"
    config: dict[str, Any] = {"providers": [{"name": provider, "id": 2 if provider == "openssl" else 1}]}
    if provider == "mock":  # the core alone: the test provider, explicitly allowed
        config["daemon"] = {"allow_test_providers": True}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        # As deployed (examples/daemon.toml, contrib/systemd): the audit trail is a file.
        config.setdefault("daemon", {})["audit_log"] = str(tmp / "audit.jsonl")
        floor = ipc_floor(tmp)
        lib = in_process()
        with cs.create_crypto_stack(
            cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(config)
        ) as stack:
            inproc = through(stack)
        with DaemonProcess(tmp / "daemon", config) as daemon:
            with daemon.stack() as stack:
                unix = through(stack)
            curves = scaling(daemon, 0.5 if args.quick else 1.5)
    us = 1e6
    one_shots = [
        "sha256_64B_single_shot",
        "aes_gcm_64B_encrypt",
        "aes_gcm_64B_decrypt",
        "hmac_sha256_64B_mac",
        "hmac_sha256_64B_verify",
    ]
    ratios = {
        f"daemon_{k}_vs_floor": unix[k] / floor
        for k in ["ping", *one_shots, "sha256_64B_init_update_finalize", "aes_gcm_64B_init_update_finalize"]
    }
    ratios["daemon_sha256_1MiB_throughput_vs_in_process"] = lib["sha256_1MiB"] / unix["sha256_1MiB"]
    ratios["daemon_aes_gcm_1MiB_throughput_vs_in_process"] = (
        lib["aes_gcm_1MiB_encrypt"] / unix["aes_gcm_1MiB_encrypt"]
    )
    ratios["daemon_sha256_1MiB_streamed_throughput_vs_in_process"] = (
        lib["sha256_1MiB"] / unix["sha256_1MiB_init_update_finalize"]
    )
    ratios["inproc_sha256_1MiB_throughput_vs_in_process"] = lib["sha256_1MiB"] / inproc["sha256_1MiB"]
    best16 = max(curve[16] / curve[1] for curve in curves.values())
    targets = [
        (
            "AES-256-GCM 64 B encrypt (one-shot) <= 1.3 x floor",
            ratios["daemon_aes_gcm_64B_encrypt_vs_floor"],
            1.3,
            False,
        ),
        *(
            (f"{k} <= 1.3 x floor", ratios[f"daemon_{k}_vs_floor"], 1.3, False)
            for k in one_shots
            if k != "aes_gcm_64B_encrypt"
        ),
        (
            "SHA-256 1 MiB (single_shot) >= 0.9 x in-process",
            ratios["daemon_sha256_1MiB_throughput_vs_in_process"],
            0.9,
            True,
        ),
        (
            "AES-256-GCM 1 MiB >= 0.3 x in-process",
            ratios["daemon_aes_gcm_1MiB_throughput_vs_in_process"],
            0.3,
            True,
        ),
        ("16 concurrent callers >= 1.6 x one (best way)", best16, 1.6, True),
    ]
    report = {
        "provider": provider,
        "ipc_floor_us": floor * us,
        "in_process_us": {k: v * us for k, v in lib.items()},
        "inproc_us": {k: v * us for k, v in inproc.items()},
        "daemon_us": {k: v * us for k, v in unix.items()},
        "ratios": ratios,
        "scaling_ops_per_s": curves,
        "targets": {
            name: {"value": value, "limit": limit, "met": value >= limit if at_least else value <= limit}
            for name, value, limit, at_least in targets
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"provider: {provider}   ({os.cpu_count()} CPUs; medians; audit trail in a file)")
    print(f"IPC floor (raw unix-socket ping-pong, 64 B): {floor * us:8.1f} µs")
    print("in-process cryptography:  " + ", ".join(f"{k} {v * us:.1f} µs" for k, v in lib.items()))
    print(f"{'':42} {'inproc://':>12} {'daemon':>12} {'x floor':>8}")
    for k in unix:
        print(f"  {k:40} {inproc[k] * us:10.1f} µs {unix[k] * us:10.1f} µs {unix[k] / floor:8.2f}")
    print("ratios:")
    for k, v in ratios.items():
        print(f"  {k:58} {v:6.2f}")
    print(
        f"  1 MiB through the daemon: SHA-256 {1 / unix['sha256_1MiB'] / 1e6 * (1 << 20):.0f} "
        f"MB/s, AES-256-GCM {1 / unix['aes_gcm_1MiB_encrypt'] / 1e6 * (1 << 20):.0f} MB/s"
    )
    print("scaling (SHA-256 64 B single-shots per second; x one caller):")
    print(f"  {'':28}" + "".join(f"{n:>14}" for n in SCALING))
    for name, curve in curves.items():
        print(f"  {name:28}" + "".join(f"{curve[n]:8.0f} {curve[n] / curve[1]:4.2f}x" for n in SCALING))
    print("targets (issue 14):")
    for name, value, limit, at_least in targets:
        met = value >= limit if at_least else value <= limit
        print(f"  {name:58} {value:6.2f}  {'met' if met else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
