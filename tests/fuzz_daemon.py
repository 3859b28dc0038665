"""``make fuzz``: a million fuzzed frames against a real daemon (issue 10).

Worker processes send frames from tests/fuzzing.py (the request grammar, frames recorded
from a real session and mutated, raw CBOR outside the subset), pipelined on their own
connections, and check every answer; a bystander client in this process keeps hashing and
records its latency; a sampler records the daemon's resident memory. At the end:

    frames, answers, closed connections, daemon crashes, tracebacks in the daemon's log,
    bystander latency p50/p99/max, daemon RSS at start and at its peak

and a non-zero exit status if the daemon crashed or hung, logged a traceback, the
bystander's p99 reached 100 ms, or the daemon's RSS passed its start plus the configured
memory budget.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cbor2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzzing import HEADER, Generator, record_session  # noqa: E402

MiB = 1 << 20
WINDOW = 16  # frames in flight per connection
CODES = {
    "KEY_OPERATION_NOT_PERMITTED",
    "OPERATION_TIMED_OUT",
    "CONTEXT_IN_ERROR_STATE",
    "RESOURCE_NOT_FOUND",
    "UNSUPPORTED_ALGORITHM",
    "NO_COMPATIBLE_PROVIDER",
    "INVALID_ARGUMENT",
    "INVALID_STATE",
    "AUTHENTICATION_FAILED",
    "ACCESS_DENIED",
    "SLOT_EMPTY",
    "PROVIDER_UNAVAILABLE",
    "CONNECTION_FAILED",
    "PROTOCOL_ERROR",
    "RESOURCE_EXHAUSTED",
    "PROVIDER_ERROR",
    "INTERNAL_ERROR",
}


def daemon_config(budget: int) -> dict[str, Any]:
    providers: list[dict[str, Any]] = [{"name": "mock", "id": 1}]
    try:
        import cryptostack_openssl  # noqa: F401

        providers.append({"name": "openssl", "id": 2})
    except ImportError:
        pass
    return {
        "daemon": {
            "allow_test_providers": True,
            "max_frame_size": 16 * MiB,
            "max_buffered_message": 16 * MiB,
            "connection_memory_budget": 64 * MiB,
            "memory_budget": budget,
            "frame_timeout": 10.0,
        },
        "providers": providers,
        "key_slots": [
            {
                "name": "PreDeployedSlot",
                "algorithm": "AES-256",
                "provider": 1,
                "permissions": ["encrypt", "decrypt"],
                "provision": "generate",
            },
            {"name": "MyNewSlot", "algorithm": "AES-256", "provider": 1},
            {
                "name": "SigningKey",
                "algorithm": "HMAC-SHA-256",
                "provider": 1,
                "permissions": ["sign", "verify", "mac"],
                "provision": "generate",
            },
            {"name": "EmptySlot", "algorithm": "Ed25519", "provider": 1},
        ],
    }


# --- a fuzzing worker (its own process) ---------------------------------------------------------
class Connection:
    """A pipelined connection: frames out, answers in, counted."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.sendall(self._frame({"hello": {"versions": [1], "client": "fuzz"}}))
        self.inbuf = bytearray()
        while not self._answers():
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("refused at hello")
            self.inbuf += chunk
        self.sock.setblocking(False)
        self.outbuf = bytearray()
        self.in_flight = 0

    @staticmethod
    def _frame(message: Any) -> bytes:
        body = cbor2.dumps(message)
        return HEADER.pack(len(body)) + body

    def _answers(self) -> list[bytes]:
        bodies = []
        while len(self.inbuf) >= 4:
            (size,) = HEADER.unpack_from(self.inbuf)
            if len(self.inbuf) < 4 + size:
                break
            bodies.append(bytes(self.inbuf[4 : 4 + size]))
            del self.inbuf[: 4 + size]
        return bodies

    def close(self) -> None:
        self.sock.close()


def worker(
    path: str, seed: int, frames: int, corpus: list[bytes], results: multiprocessing.Queue[dict[str, Any]]
) -> None:
    gen = Generator(seed, corpus)
    stats: dict[str, Any] = {
        "sent": 0,
        "answers": 0,
        "closes": 0,
        "unexpected_closes": 0,
        "hangs": 0,
        "bad_answers": 0,
        "codes": {},
        "examples": [],
    }
    conn = Connection(path)
    selector = selectors.DefaultSelector()
    selector.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def reconnect(expected: bool) -> None:
        nonlocal conn
        selector.unregister(conn.sock)
        conn.close()
        stats["closes"] += 1
        if not expected:
            stats["unexpected_closes"] += 1
        conn = Connection(path)
        selector.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)

    while stats["sent"] < frames or conn.in_flight:
        while conn.in_flight < WINDOW and stats["sent"] < frames and len(conn.outbuf) < 4 * MiB:
            frame = gen.frame()
            stats["sent"] += 1
            if not frame.in_step:  # a header that lies: send it, then give the connection up
                conn.sock.setblocking(True)
                conn.sock.settimeout(10)
                try:
                    conn.sock.sendall(bytes(conn.outbuf) + frame.data)
                except OSError:
                    pass
                reconnect(expected=True)
                continue
            conn.outbuf += frame.data
            conn.in_flight += 1
        events = selector.select(timeout=30)
        if not events:
            stats["hangs"] += 1
            reconnect(expected=False)
            continue
        closed = False
        for _key, mask in events:
            if mask & selectors.EVENT_WRITE and conn.outbuf:
                try:
                    sent = conn.sock.send(conn.outbuf)
                    del conn.outbuf[:sent]
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
            if mask & selectors.EVENT_READ:
                try:
                    chunk = conn.sock.recv(1 << 20)
                except BlockingIOError:
                    chunk = None
                except OSError:
                    chunk = b""
                if chunk == b"":
                    closed = True
                elif chunk:
                    conn.inbuf += chunk
                    for body in conn._answers():
                        conn.in_flight = max(0, conn.in_flight - 1)
                        stats["answers"] += 1
                        _check(cbor2.loads(body), stats)
        if closed:
            # Frames whose header announces more than max_frame_size end the connection
            # (documented); anything else here is unexpected.
            reconnect(expected=False)
    conn.close()
    results.put(stats)


def _check(answer: Any, stats: dict[str, Any]) -> None:
    ok = isinstance(answer, dict) and "id" in answer and isinstance(answer.get("ok"), bool)
    if ok and not answer["ok"]:
        error = answer.get("error")
        ok = isinstance(error, dict) and error.get("code") in CODES
        code = error.get("code") if isinstance(error, dict) else "?"
        stats["codes"][code] = stats["codes"].get(code, 0) + 1
        if code in ("PROVIDER_ERROR", "INTERNAL_ERROR") and len(stats["examples"]) < 5:
            stats["examples"].append(error)
    elif ok:
        stats["codes"]["ok"] = stats["codes"].get("ok", 0) + 1
    if not ok:
        stats["bad_answers"] += 1


# --- the run ---------------------------------------------------------------------------------------
def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--budget-mib", type=int, default=512, help="[daemon] memory_budget")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import cryptostack_core as cs
    from cryptostack_core.testing.daemon import DaemonProcess

    budget = args.budget_mib * MiB
    directory = Path(tempfile.mkdtemp(prefix="cryptostack-fuzz-"))
    daemon = DaemonProcess(directory, daemon_config(budget)).start()
    assert daemon.process is not None
    pid = daemon.process.pid
    try:
        corpus = record_session(daemon.endpoint)
        time.sleep(0.5)
        rss_start = rss(pid)
        peak = [rss_start]
        latencies: list[float] = []
        stop = threading.Event()
        bystander_errors: list[str] = []

        def sampler() -> None:
            while not stop.wait(0.05):
                peak[0] = max(peak[0], rss(pid))

        def bystander() -> None:
            try:
                with daemon.stack(timeout=30) as stack:
                    h = stack.create_crypto_context().create_hash_context(
                        cs.HashContextConfig().set_algorithm("SHA-256")
                    )
                    expected = hashlib.sha256(b"bystander").digest()
                    while not stop.wait(0.01):
                        started = time.perf_counter()
                        if h.single_shot(b"bystander") != expected:
                            bystander_errors.append("wrong digest")
                        latencies.append(time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001
                bystander_errors.append(repr(exc))

        threads = [threading.Thread(target=sampler), threading.Thread(target=bystander)]
        for t in threads:
            t.start()
        results: multiprocessing.Queue[dict[str, Any]] = multiprocessing.Queue()
        share = args.frames // args.workers
        procs = [
            multiprocessing.Process(
                target=worker,
                args=(
                    str(daemon.socket_path),
                    args.seed * 1000 + n,
                    share + (args.frames % args.workers if n == 0 else 0),
                    corpus,
                    results,
                ),
            )
            for n in range(args.workers)
        ]
        started = time.monotonic()
        for p in procs:
            p.start()
        stats = [results.get() for _ in procs]
        for p in procs:
            p.join()
        elapsed = time.monotonic() - started
        stop.set()
        for t in threads:
            t.join()
        alive = daemon.process is not None and daemon.process.poll() is None
        log = daemon.log_text()
    finally:
        daemon.stop()

    total = {
        k: sum(s[k] for s in stats)
        for k in ("sent", "answers", "closes", "unexpected_closes", "hangs", "bad_answers")
    }
    codes: dict[str, int] = {}
    for s in stats:
        for code, n in s["codes"].items():
            codes[code] = codes.get(code, 0) + n
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99)] if ordered else float("inf")
    figures = {
        "frames": total["sent"],
        "answers": total["answers"],
        "seconds": round(elapsed, 1),
        "frames_per_second": round(total["sent"] / elapsed),
        "closed_connections": total["closes"],
        "unexpected_closes": total["unexpected_closes"],
        "hangs": total["hangs"],
        "malformed_answers": total["bad_answers"],
        "crashes": 0 if alive else 1,
        "tracebacks": log.count("Traceback"),
        "bystander_calls": len(ordered),
        "bystander_errors": bystander_errors[:3],
        "bystander_p50_ms": round(statistics.median(ordered) * 1000, 2) if ordered else None,
        "bystander_p99_ms": round(p99 * 1000, 2),
        "bystander_max_ms": round(ordered[-1] * 1000, 2) if ordered else None,
        "rss_start_mib": round(rss_start / MiB, 1),
        "rss_peak_mib": round(peak[0] / MiB, 1),
        "memory_budget_mib": args.budget_mib,
        "answer_codes": dict(sorted(codes.items())),
        "provider_or_internal_errors": [e for s in stats for e in s["examples"]][:5],
        "daemon_log": str(daemon.log_path),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    failures = []
    if not alive:
        failures.append("the daemon died")
    if figures["tracebacks"]:
        failures.append(f"{figures['tracebacks']} tracebacks in {daemon.log_path}")
    if total["hangs"] or total["unexpected_closes"] or total["bad_answers"]:
        failures.append("hangs, unexpected closes or malformed answers")
    if bystander_errors:
        failures.append(f"the bystander failed: {bystander_errors[:3]}")
    if p99 >= 0.1:
        failures.append(f"bystander p99 {p99 * 1000:.1f} ms >= 100 ms")
    if peak[0] > rss_start + budget:
        failures.append(
            f"daemon RSS peaked at {peak[0] / MiB:.0f} MiB, above its start "
            f"({rss_start / MiB:.0f} MiB) plus the {args.budget_mib} MiB budget"
        )
    for failure in failures:
        print(f"FUZZ FAILURE: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
