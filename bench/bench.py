"""`make bench`: cryptostack against the in-process library and the IPC floor, one run.

Prints absolute figures and the ratios the design budget is stated in:
  * raw unix-socket ping-pong between two processes (the IPC floor);
  * in-process pyca `cryptography` (SHA-256, AES-256-GCM);
  * the same work through ``inproc://`` and through a daemon subprocess.
Nothing here is asserted; it is measured.
"""

from __future__ import annotations

import argparse
import json
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


def per_call(fn: Callable[[], object], seconds: float = 1.0, min_calls: int = 50) -> float:
    """Median seconds per call over several timed batches."""
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
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    def sha(data: bytes) -> Callable[[], object]:
        def run() -> object:
            h = hashes.Hash(hashes.SHA256())
            h.update(data)
            return h.finalize()
        return run

    gcm = AESGCM(os.urandom(32))
    return {"sha256_64B": per_call(sha(SMALL)), "sha256_1MiB": per_call(sha(MIB), min_calls=5),
            "aes_gcm_64B": per_call(lambda: gcm.encrypt(b"\0" * 12, SMALL, None))}


def through(stack: cs.CryptoStack) -> dict[str, float]:
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

    out["sha256_64B_reset_init_update_finalize"] = per_call(streamed)

    def bulk() -> bytes:
        h.init()
        h.update(MIB)
        return h.finalize()

    out["sha256_1MiB"] = per_call(bulk, min_calls=5)
    km = ctx.create_key_management_context()
    key = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256"))
    enc = ctx.create_cipher_context(cs.CipherContextConfig().set_algorithm("AES-256-GCM")
                                    .set_key(key).set_direction(cs.CipherDirection.ENCRYPT))

    def gcm() -> bytes:
        enc.init(b"\0" * 12)
        return enc.update(SMALL) + enc.finalize()

    out["aes_gcm_64B"] = per_call(gcm)
    return out


def concurrent_clients(daemon: DaemonProcess, clients: int = 8, seconds: float = 2.0
                       ) -> dict[str, float]:
    counts = [0] * clients
    errors: list[str] = []
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        try:
            with daemon.stack() as stack:
                h = stack.create_crypto_context().create_hash_context(
                    cs.HashContextConfig().set_algorithm("SHA-256"))
                while time.monotonic() < stop:
                    t = time.perf_counter()
                    h.single_shot(SMALL)
                    latencies[i].append(time.perf_counter() - t)
                    counts[i] += 1
        except Exception as exc:  # noqa: BLE001 - reported
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_lat = sorted(x for lst in latencies for x in lst)
    return {"clients": clients, "ops_per_s": sum(counts) / seconds, "errors": len(errors),
            "p99_ms": all_lat[int(len(all_lat) * 0.99)] * 1000 if all_lat else float("nan"),
            "min_ops_one_client": min(counts)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    provider = "openssl" if "openssl" in available_provider_names() else "mock"
    config: dict[str, Any] = {
        "providers": [{"name": provider, "id": 2 if provider == "openssl" else 1}]}
    if provider == "mock":  # the core alone: the test provider, explicitly allowed
        config["daemon"] = {"allow_test_providers": True}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        floor = ipc_floor(tmp)
        lib = in_process()
        with cs.create_crypto_stack(cs.CryptoStackConfig().set_connection_endpoint("inproc://")
                                    .set_daemon_config(config)) as stack:
            inproc = through(stack)
        with DaemonProcess(tmp / "daemon", config) as daemon:
            with daemon.stack() as stack:
                unix = through(stack)
            conc = concurrent_clients(daemon)
    us = 1e6
    report = {
        "provider": provider, "ipc_floor_us": floor * us,
        "in_process_us": {k: v * us for k, v in lib.items()},
        "inproc_us": {k: v * us for k, v in inproc.items()},
        "daemon_us": {k: v * us for k, v in unix.items()},
        "ratios": {
            "daemon_single_shot_vs_floor": unix["sha256_64B_single_shot"] / floor,
            "daemon_reset_init_update_finalize_vs_floor":
                unix["sha256_64B_reset_init_update_finalize"] / floor,
            "daemon_ping_vs_floor": unix["ping"] / floor,
            "daemon_aes_gcm_64B_vs_floor": unix["aes_gcm_64B"] / floor,
            "daemon_1MiB_throughput_vs_in_process": lib["sha256_1MiB"] / unix["sha256_1MiB"],
            "inproc_1MiB_throughput_vs_in_process": lib["sha256_1MiB"] / inproc["sha256_1MiB"],
        },
        "daemon_1MiB_MB_per_s": 1 / unix["sha256_1MiB"],
        "in_process_1MiB_MB_per_s": 1 / lib["sha256_1MiB"],
        "concurrency": conc,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"provider: {provider}   (2 cores; medians)")
    print(f"IPC floor (raw unix-socket ping-pong, 64 B): {floor * us:8.1f} µs")
    print("in-process cryptography:  " + ", ".join(f"{k} {v * us:.1f} µs" for k, v in lib.items()))
    print(f"{'':42} {'inproc://':>12} {'daemon':>12}")
    for k in unix:
        print(f"  {k:40} {inproc[k] * us:10.1f} µs {unix[k] * us:10.1f} µs")
    print("ratios:")
    for k, v in report["ratios"].items():  # type: ignore[attr-defined]
        print(f"  {k:48} {v:6.2f}")
    print(f"  1 MiB SHA-256 through the daemon: {report['daemon_1MiB_MB_per_s']:.0f} MiB/s "
          f"(in process {report['in_process_1MiB_MB_per_s']:.0f} MiB/s)")
    print(f"concurrency: {conc['clients']} clients, {conc['ops_per_s']:.0f} ops/s total, "
          f"p99 {conc['p99_ms']:.2f} ms, errors {conc['errors']}, "
          f"slowest client {conc['min_ops_one_client']} ops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
