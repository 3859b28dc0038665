"""The structured fuzzer, bounded (issue 10): Hypothesis draws frames from the request grammar,
mutated recorded frames and raw CBOR outside the subset (tests/fuzzing.py) with a fixed seed,
against one real daemon while a bystander keeps using it. Every frame must be answered (or,
for a frame that breaks the stream, end in a clean close), no answer may be a provider
failure, and the daemon must stay up with no traceback in its log.

``make fuzz`` runs the same sources for a million frames (tests/fuzz_daemon.py).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzzing import Frame, record_session, strategies  # noqa: E402
from secutil import RawClient  # noqa: E402

EXAMPLES = int(os.environ.get("CRYPTOSTACK_FUZZ_EXAMPLES", "600"))
CODES = {code.value for code in cs.ErrorCode}


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    config = {
        "daemon": {
            "allow_test_providers": True,
            "max_frame_size": 4 << 20,
            "max_buffered_message": 4 << 20,
            "connection_memory_budget": 16 << 20,
            "memory_budget": 64 << 20,
            "frame_timeout": 5.0,
        },
        "providers": [{"name": "mock", "id": 1}],
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
    with DaemonProcess(tmp_path_factory.mktemp("fuzz"), config) as daemon:
        yield daemon


class Driver:
    """One raw connection, reopened whenever a frame ends it."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.raw: RawClient | None = None
        self.answers = 0
        self.closes = 0
        self.outcomes: Counter[str] = Counter()

    def exchange(self, frame: Frame) -> dict[str, Any] | None:
        if self.raw is None:
            self.raw = RawClient(self.daemon.socket_path, timeout=30)
        raw = self.raw
        try:
            raw.send_raw(frame.data)
            if not frame.in_step:
                raise ConnectionError("out of step")
            reply = raw.recv()
        except (ConnectionError, OSError):
            raw.close()
            self.raw = None
            self.closes += 1
            return None
        self.answers += 1
        self.outcomes["ok" if reply.get("ok") else str(reply.get("error", {}).get("code"))] += 1
        return reply


def _check(reply: dict[str, Any] | None) -> None:
    if reply is None:
        return
    assert isinstance(reply, dict) and "id" in reply and isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        error = reply["error"]
        assert error["code"] in CODES and isinstance(error["message"], str), reply
        assert error["code"] != "PROVIDER_ERROR", reply  # the mock never fails by itself


def test_fuzzed_frames_never_harm_the_daemon(fuzz_target: DaemonProcess) -> None:
    corpus = record_session(fuzz_target.endpoint)
    assert len(corpus) > 30
    frames = strategies(corpus)
    driver = Driver(fuzz_target)
    stop = threading.Event()
    bystander_errors: list[BaseException] = []

    def bystander() -> None:
        try:
            with fuzz_target.stack(timeout=30) as stack:
                h = stack.create_crypto_context().create_hash_context(
                    cs.HashContextConfig().set_algorithm("SHA-256")
                )
                while not stop.is_set():
                    assert h.single_shot(b"bystander") == hashlib.sha256(b"bystander").digest()
                    time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001
            bystander_errors.append(exc)

    thread = threading.Thread(target=bystander)
    thread.start()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def run(data: st.DataObject) -> None:
        _check(driver.exchange(data.draw(frames)))

    try:
        run()
    finally:
        stop.set()
        thread.join(60)
    assert not bystander_errors, bystander_errors
    print(
        f"fuzz: {driver.answers} answers, {driver.closes} closed connections, "
        f"{dict(driver.outcomes.most_common())}"
    )
    assert driver.answers > EXAMPLES // 2
    assert driver.outcomes["ok"] > 0 and driver.outcomes["PROTOCOL_ERROR"] > 0
    assert fuzz_target.process is not None and fuzz_target.process.poll() is None
    log = fuzz_target.log_text()
    assert "Traceback" not in log, log[-4000:]
