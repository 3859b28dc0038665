"""The daemon as a trust boundary (issue 10): what a local attacker with their own uid tries.

Each test reproduces one finding of the issue against a real daemon and asserts the fixed
behaviour; the finding's number is in the test's docstring.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest

from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.waiting import Gate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from secutil import (  # noqa: E402
    RawClient,
    attach_and_send,
    peak_rss,
    sealed_memfd,
    timed_ping,
)

MockConfig = Callable[..., dict[str, Any]]
MiB = 1 << 20


def error_code(reply: dict[str, Any]) -> str:
    assert reply.get("ok") is False, reply
    code: str = reply["error"]["code"]
    assert reply["error"]["message"]
    return code


def assert_no_traceback(daemon: DaemonProcess) -> None:
    log = daemon.log_text()
    assert "Traceback" not in log, log[-4000:]


def public_daemon(
    factory: Callable[..., DaemonProcess], config: dict[str, Any], public_dir: Path
) -> DaemonProcess:
    """A daemon whose socket other uids may connect to."""
    daemon = dict(config.get("daemon", {}))
    daemon.update(socket=str(public_dir / "daemon.sock"), socket_mode=0o666)
    return factory({**config, "daemon": daemon})


# --- 1: shm.attach must never map what the client cannot read ------------------------------
ATTACKER_SHM = r"""
import hashlib, json, os, sys, threading, time
from secutil import RawClient, sealed_memfd
sock, secret, duration = sys.argv[1], sys.argv[2], float(sys.argv[3])
out = {"digests": [], "errors": [], "protocol": None}
try:
    open(secret, "rb")
    out["readable"] = True
except PermissionError:
    out["readable"] = False
opath = os.open(secret, os.O_PATH)
memfd = os.memfd_create("cryptostack-shm")
os.ftruncate(memfd, 4096)
zeros = hashlib.sha256(bytes(4096)).hexdigest()
N = 200
os.dup2(memfd, N)
stop = threading.Event()
def flip():
    # Swap fd N between our memfd and an O_PATH fd of a file we cannot read.
    while not stop.is_set():
        os.dup2(memfd, N)
        os.dup2(opath, N)
threading.Thread(target=flip, daemon=True).start()
raw = RawClient(sock)
ctx = raw.request("hash.create", {"algorithm": "SHA-256"}, 1)["result"]["ctx"]
deadline = time.monotonic() + duration
i = 10
while time.monotonic() < deadline:
    i += 2
    reply = raw.request("shm.attach", {"fd": N, "size": 4096}, i)
    if not reply["ok"]:
        continue
    if reply["result"].get("ready"):
        out["protocol"] = "scm_rights"
        break
    out["protocol"] = "fd-number"
    raw.request("hash.init", {"ctx": ctx}, i + 1)
    raw.request("hash.update", {"ctx": ctx, "data": {"shm": [0, 4096]}}, i + 1)
    digest = raw.request("hash.finalize", {"ctx": ctx}, i + 1).get("result")
    if isinstance(digest, bytes):
        out["digests"].append(digest.hex())
        if digest.hex() != zeros:
            break  # the daemon mapped something that is not our memfd
stop.set()
if out["protocol"] == "scm_rights":
    # Hand the daemon our O_PATH fd itself, then a plain fd of a file we may read, then
    # an unsealed memfd: each must be refused, and the request they ride with not run.
    mine = os.open("/etc/hostname" if os.path.exists("/etc/hostname") else "/etc/passwd",
                   os.O_RDONLY)
    for n, fd in enumerate((opath, mine, memfd)):
        reply = raw.request("shm.attach", {}, 100 + 2 * n)
        assert reply["ok"] and reply["result"]["ready"], reply
        raw.send_with_fds({"id": 101 + 2 * n, "op": "hash.single_shot",
                           "args": {"ctx": ctx, "data": {"shm": [0, 4096]}}}, [fd])
        reply = raw.recv()
        out["errors"].append(reply["error"]["code"] if not reply["ok"] else "OK")
        if reply["ok"]:
            out["digests"].append(reply["result"].hex())
out["ping"] = raw.request("ping", {}, 999).get("result")
print(json.dumps(out))
"""


def test_shm_attach_never_maps_a_file_the_client_cannot_read(
    other_users: Any, public_dir: Path, mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Finding 1: the fd-number attach raced with an O_PATH swap maps any root-readable file."""
    attacker = other_users[0]
    secret = public_dir / "secret"
    secret.write_bytes(os.urandom(4096))
    os.chmod(secret, 0o600)
    d = public_daemon(daemon_factory, mock_config(), public_dir)
    run = attacker.run(ATTACKER_SHM, str(d.socket_path), str(secret), "10")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["readable"] is False
    assert hashlib.sha256(secret.read_bytes()).hexdigest() not in out["digests"]
    assert out["protocol"] == "scm_rights"  # nothing is opened by fd number any more
    assert out["errors"] == ["INVALID_ARGUMENT"] * 3
    assert out["ping"] == "pong"
    assert d.process is not None and d.process.poll() is None
    assert_no_traceback(d)


# --- 2: a mapped region must never fault the daemon ------------------------------------------
def test_shrinking_shared_memory_cannot_kill_the_daemon(daemon: DaemonProcess) -> None:
    """Finding 2: ftruncate-shrinking an attached memfd killed the daemon with SIGBUS."""
    assert daemon.process is not None
    with RawClient(daemon.socket_path) as raw:
        ctx = raw.request("hash.create", {"algorithm": "SHA-256"}, 1)["result"]["ctx"]
        # An unsealed memfd (what the old client sent): refused, naming the seals.
        fd = os.memfd_create("cryptostack-shm", os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, MiB)
        reply = attach_and_send(
            raw, fd, MiB, {"id": 2, "op": "hash.single_shot", "args": {"ctx": ctx, "data": {"shm": [0, MiB]}}}
        )
        if reply.get("ok"):  # the old daemon mapped it: shrink it under the daemon's feet
            os.ftruncate(fd, 0)
            raw.send({"id": 3, "op": "hash.single_shot", "args": {"ctx": ctx, "data": {"shm": [0, MiB]}}})
            try:
                raw.recv()
            except (ConnectionError, OSError):
                pass
        assert daemon.process.poll() is None, "the daemon died"
        assert error_code(reply) == "INVALID_ARGUMENT"
        assert "seal" in reply["error"]["message"]
        os.close(fd)
        # Partially sealed (no F_SEAL_SHRINK): still refused.
        fd = os.memfd_create("cryptostack-shm", os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, 8192)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
        reply = attach_and_send(
            raw, fd, 8192, {"id": 4, "op": "hash.single_shot", "args": {"ctx": ctx, "data": {"shm": [0, 8]}}}
        )
        assert error_code(reply) == "INVALID_ARGUMENT" and "F_SEAL_SHRINK" in reply["error"]["message"]
        os.close(fd)
        # Sealed against resizing but still writable (the client's reusable region): taken,
        # and it can no longer shrink.
        fd = os.memfd_create("cryptostack-shm", os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, 8192)
        os.pwrite(fd, b"abcdefgh", 0)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        reply = attach_and_send(
            raw, fd, 8192, {"id": 4, "op": "hash.single_shot", "args": {"ctx": ctx, "data": {"shm": [0, 8]}}}
        )
        assert reply["ok"] and reply["result"] == hashlib.sha256(b"abcdefgh").digest(), reply
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        os.close(fd)
        # A sealed memfd is accepted, and can no longer shrink.
        data = os.urandom(MiB)
        fd = sealed_memfd(data)
        reply = attach_and_send(
            raw, fd, MiB, {"id": 5, "op": "hash.single_shot", "args": {"ctx": ctx, "data": {"shm": [0, MiB]}}}
        )
        assert reply["ok"] and reply["result"] == hashlib.sha256(data).digest(), reply
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        os.close(fd)
        # References outside the region are refused; the connection stays usable.
        reply = raw.request("hash.single_shot", {"ctx": ctx, "data": {"shm": [MiB - 1, 2]}}, 6)
        assert error_code(reply) == "INVALID_ARGUMENT"
        assert raw.request("ping", {}, 7)["result"] == "pong"
    assert_no_traceback(daemon)


def test_the_client_uses_sealed_shared_memory(daemon: DaemonProcess) -> None:
    """Finding 1/2, client side: large buffers travel in sealed memfds passed by SCM_RIGHTS."""
    big = os.urandom(3 * MiB)
    with daemon.stack() as stack:
        import cryptostack_core as cs

        h = stack.create_crypto_context().create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        h.init()
        h.update(big)
        h.update(big[:1000])
        assert h.finalize() == hashlib.sha256(big + big[:1000]).digest()
        transport = stack._channel.transport  # type: ignore[attr-defined]
        assert transport.shm_transfers >= 1
    assert_no_traceback(daemon)


# --- 3: memory budget ----------------------------------------------------------------------------
def test_a_frame_of_empty_maps_is_refused_before_it_is_decoded(daemon: DaemonProcess) -> None:
    """Finding 3: a frame of empty maps (8 MiB) grew the daemon by 640 MiB while decoding."""
    assert daemon.process is not None
    pid = daemon.process.pid
    before = peak_rss(pid)
    empties = b"\x9a" + (2_000_000).to_bytes(4, "big") + b"\xa0" * 2_000_000
    body = cbor2.dumps({"id": 1, "op": "ping", "args": {"a": 0}})[:-1] + empties
    with RawClient(daemon.socket_path) as raw:
        raw.send_body(body)
        reply = raw.recv()
        assert error_code(reply) == "PROTOCOL_ERROR" and reply["id"] is None
        assert "items" in reply["error"]["message"] or "array" in reply["error"]["message"]
        assert raw.request("ping", {}, 2)["result"] == "pong"  # the connection stays usable
    assert peak_rss(pid) - before < 40 * MiB
    assert_no_traceback(daemon)


# --- 4: one frame must not freeze every client --------------------------------------------------
def test_hash_colliding_map_keys_do_not_freeze_the_daemon(daemon: DaemonProcess) -> None:
    """Finding 4: integer keys k*(2**61-1) share one hash; decoding them took quadratic time."""
    m = (1 << 61) - 1
    body = cbor2.dumps({"id": 1, "op": "ping", "args": {k * m: 0 for k in range(1, 40001)}})
    answered = threading.Event()
    latencies: list[float] = []

    def bystander() -> None:
        while not answered.is_set():
            latencies.append(timed_ping(daemon.socket_path))

    with RawClient(daemon.socket_path, timeout=120) as raw:
        thread = threading.Thread(target=bystander)
        thread.start()
        try:
            started = time.monotonic()
            raw.send_body(body)
            reply = raw.recv()
            elapsed = time.monotonic() - started
        finally:
            answered.set()
            thread.join()
        assert error_code(reply) == "PROTOCOL_ERROR"
        assert elapsed < 2.0, f"the frame took {elapsed:.1f} s to refuse"
        assert max(latencies) < 2.0, f"a bystander waited {max(latencies):.1f} s"
        assert raw.request("ping", {}, 2)["result"] == "pong"
    assert_no_traceback(daemon)


@pytest.mark.parametrize(
    ("name", "body", "needle"),
    [
        ("deep nesting", b"\xa1\x61a" * 40 + b"\x00", "depth"),
        ("a tag (bignum)", cbor2.dumps({"id": 1, "op": "ping", "args": {}, "timeout_ms": 10**400}), "tag"),
        ("a tag (regex)", b"\xa3\x62id\x01\x62op\x64ping\x64args\xd8\x23\x63a+b", "tag"),
        ("indefinite length", b"\xbf\x62id\x01\x62op\x64ping\xff", "indefinite"),
        ("a byte-string key", b"\xa3\x62id\x01\x62op\x64ping\x41k\x00", "key"),
        ("a duplicate key", b"\xa3\x62id\x01\x62op\x64ping\x62op\x64ping", "duplicate"),
        (
            "too many keys",
            cbor2.dumps({"id": 1, "op": "ping", "args": {f"k{i}": 0 for i in range(2000)}}),
            "keys",
        ),
        ("a long array", cbor2.dumps({"id": 1, "op": "ping", "args": {"a": [0] * 20000}}), "array"),
        ("undefined arguments", b"\xa3\x62id\x01\x62op\x64ping\x64args\xf7", "args"),
        ("trailing bytes", cbor2.dumps({"id": 1, "op": "ping"}) + b"\x00", "trailing"),
        ("truncated", cbor2.dumps({"id": 1, "op": "ping", "args": {"data": b"x" * 100}})[:-5], "truncated"),
    ],
)
def test_frames_outside_the_documented_cbor_subset_are_refused(
    daemon: DaemonProcess, name: str, body: bytes, needle: str
) -> None:
    """Finding 4 (and 10): the decoder's limits, each answered with PROTOCOL_ERROR."""
    with RawClient(daemon.socket_path) as raw:
        raw.send_body(body)
        reply = raw.recv()
        assert error_code(reply) == "PROTOCOL_ERROR", name
        assert needle in reply["error"]["message"].lower(), reply
        assert raw.request("ping", {}, 2)["result"] == "pong"
    assert_no_traceback(daemon)


def test_cbor_subset_limits_are_exact() -> None:
    """Finding 4: each limit of docs/protocol.md, at and just past its boundary, both for
    frames the walk checks and for small frames cbor2 decodes directly."""
    from cryptostack_core.wire import cbor_subset as sub

    def nested(levels: int) -> Any:
        value: Any = 0
        for _ in range(levels - 1):
            value = {"a": value}
        return value  # inside the frame's own map: `levels` maps deep

    cases: list[tuple[Any, bool]] = [
        (nested(sub.MAX_DEPTH), True),
        (nested(sub.MAX_DEPTH + 1), False),
        ({i: 0 for i in range(sub.MAX_MAP_KEYS)}, True),
        ({i: 0 for i in range(sub.MAX_MAP_KEYS + 1)}, False),
        ([0] * sub.MAX_ARRAY, True),
        ([0] * (sub.MAX_ARRAY + 1), False),
        ({(1 << 32) - 1: 0, -(1 << 32): 0}, True),
        ({1 << 32: 0}, False),
        ({b"k": 0}, False),
        ({1.5: 0}, False),
        ({None: 0}, False),
        ([[0] * 16000] * 4, True),
        ([[0] * 16000] * 5, False),  # items per frame
    ]
    for value, accepted in cases:
        for pad in (b"", b"x" * sub.SCAN_THRESHOLD):  # a small frame, and one the walk checks
            body = cbor2.dumps({"pad": pad, "v": value})
            if accepted:
                sub.loads(body)
            else:
                with pytest.raises(sub.SubsetError):
                    sub.loads(body)


# --- 6: authenticated key store (start-up checks are in test_keystore_integrity.py) ---------------
def _certificate_with_a_malformed_subject() -> bytes:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ZZsubjectZZ")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    at = der.index(b"ZZsubjectZZ")
    return der[: at - 2] + b"\x02" + der[at - 1 :]  # the CN's string tag becomes INTEGER


# --- 11: metadata ------------------------------------------------------------------------------
def test_audit_log_is_created_private(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    """Finding 11: the audit log was created 0644."""
    audit = tmp_path / "audit" / "audit.jsonl"
    old_umask = os.umask(0)
    try:
        d = daemon_factory(mock_config(audit_log=str(audit)))
    finally:
        os.umask(old_umask)
    with d.stack() as stack:
        stack.ping()
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600
    d.stop()
    # A log left readable by an older daemon is tightened at start.
    os.chmod(audit, 0o644)
    d.start()
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600


def test_audit_log_group_gets_read_access(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess], tmp_path: Path, other_users: Any
) -> None:
    """Finding 11: ``audit_log_group`` makes the log 0640 to that group."""
    audit = tmp_path / "audit.jsonl"
    reader = other_users[1]
    daemon_factory(mock_config(audit_log=str(audit), audit_log_group=reader.gid))
    info = audit.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_gid == reader.gid


# --- 3: memory budget (continued) -------------------------------------------------------------
def test_a_batch_of_large_answers_is_refused_before_it_is_built(daemon: DaemonProcess) -> None:
    """Finding 3: a 152 KB batch of random.generate(1 MiB) x 4000 drove the daemon past 3 GiB."""
    assert daemon.process is not None
    before = peak_rss(daemon.process.pid)
    calls = [{"op": "random.generate", "args": {"length": MiB}}] * 200
    with RawClient(daemon.socket_path, timeout=60) as raw:
        reply = raw.request("batch", {"calls": calls})
        assert error_code(reply) == "RESOURCE_EXHAUSTED"
        assert "max_frame_size" in reply["error"]["message"]
        assert raw.request("ping", {}, 2)["result"] == "pong"
    assert peak_rss(daemon.process.pid) - before < 150 * MiB
    assert_no_traceback(daemon)


def test_buffered_messages_are_charged_to_the_connection_and_the_daemon(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Finding 3: 60 AES-GCM decryptions buffering 56 MiB each (within max_buffered_message)."""
    d = daemon_factory(
        mock_config(
            max_frame_size=8 * MiB,
            max_buffered_message=24 * MiB,
            connection_memory_budget=40 * MiB,
            memory_budget=44 * MiB,
        )
    )
    chunk = bytes(6 * MiB)

    def decryptor(raw: RawClient, n: int) -> int:
        slot = raw.request("resource.resolve", {"name": "PreDeployedSlot", "type": "KEY_SLOT"}, n)["result"]
        ctx = raw.request(
            "cipher.create", {"algorithm": "AES-256-GCM", "key": slot, "direction": "DECRYPT"}, n + 1
        )["result"]["ctx"]
        assert raw.request("cipher.init", {"ctx": ctx, "iv": bytes(12)}, n + 2)["ok"]
        return int(ctx)

    with RawClient(d.socket_path, timeout=60) as first, RawClient(d.socket_path, timeout=60) as second:
        a, b = decryptor(first, 10), decryptor(first, 20)
        for _ in range(3):  # 18 MiB held by context a
            assert first.request("cipher.update", {"ctx": a, "data": chunk}, 30)["ok"]
        assert first.request("cipher.update", {"ctx": b, "data": chunk}, 31)["ok"]
        assert first.request("cipher.update", {"ctx": b, "data": chunk}, 32)["ok"]  # 30 MiB
        reply = first.request("cipher.update", {"ctx": b, "data": chunk}, 33)
        assert error_code(reply) == "RESOURCE_EXHAUSTED"
        assert "connection_memory_budget" in reply["error"]["message"]
        # Context b's message was discarded and its memory given back; a keeps its 18 MiB.
        assert first.request("cipher.init", {"ctx": b, "iv": bytes(12)}, 34)["ok"]
        c = decryptor(second, 40)
        for _ in range(6):
            reply = second.request("cipher.update", {"ctx": c, "data": chunk}, 41)
            if not reply["ok"]:
                break
        assert error_code(reply) == "RESOURCE_EXHAUSTED"
        assert "memory_budget" in reply["error"]["message"] and "all clients" in reply["error"]["message"]
        # Closing a context returns its memory to everyone.
        assert first.request("context.close", {"ctx": a}, 50)["ok"]
        assert second.request("cipher.init", {"ctx": c, "iv": bytes(12)}, 51)["ok"]
        for _ in range(3):
            assert second.request("cipher.update", {"ctx": c, "data": chunk}, 52)["ok"]
    assert_no_traceback(d)


def test_unfinished_frames_are_reserved_before_they_are_buffered(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Finding 3: connections holding 60 MiB of an unfinished frame each."""
    d = daemon_factory(
        mock_config(
            max_frame_size=16 * MiB,
            max_buffered_message=16 * MiB,
            connection_memory_budget=20 * MiB,
            memory_budget=40 * MiB,
        )
    )
    assert d.process is not None
    before = peak_rss(d.process.pid)
    holders = [RawClient(d.socket_path) for _ in range(3)]
    try:
        for raw in holders[:2]:
            raw.send_raw((16 * MiB).to_bytes(4, "big") + bytes(MiB))
        late = holders[2]
        late.send_raw((16 * MiB).to_bytes(4, "big") + bytes(MiB))
        reply = late.recv()  # answered at the header, before the body is read
        assert error_code(reply) == "RESOURCE_EXHAUSTED" and reply["id"] is None
        assert "memory_budget" in reply["error"]["message"]
        late.send_raw(bytes(15 * MiB))  # the rest of the refused frame is discarded...
        assert late.request("ping", {}, 2)["result"] == "pong"  # ...and the stream goes on
    finally:
        for raw in holders:
            raw.close()
    assert peak_rss(d.process.pid) - before < 60 * MiB
    assert_no_traceback(d)


def test_clients_that_never_read_their_answers_are_bounded(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Finding 3: clients that never read their answers made the daemon hold 1.35 GB."""
    d = daemon_factory(
        mock_config(connection_memory_budget=32 * MiB, max_frame_size=8 * MiB, max_buffered_message=8 * MiB)
    )
    assert d.process is not None
    before = peak_rss(d.process.pid)
    request = RawClient.frame({"id": 1, "op": "random.generate", "args": {"length": MiB}})
    silent = [RawClient(d.socket_path) for _ in range(8)]
    try:
        for raw in silent:
            raw.send_raw(request * 48)  # 48 MiB of answers each, never read
        with RawClient(d.socket_path) as admin:  # wait until the daemon has done the work
            deadline = time.monotonic() + 120
            while True:
                status = admin.request("status", {}, 2)["result"]
                if status["memory"]["request frames"] < 100:  # only this status request
                    break
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert status["memory"]["unread answers"] <= 8 * 33 * MiB
        answers = [silent[0].recv() for _ in range(48)]
        ok = [a for a in answers if a["ok"]]
        refused = [a for a in answers if not a["ok"]]
        assert 0 < len(ok) <= 33 and refused
        assert all(a["error"]["code"] == "RESOURCE_EXHAUSTED" for a in refused)
        assert any("connection_memory_budget" in a["error"]["message"] for a in refused)
    finally:
        for raw in silent:
            raw.close()
    assert peak_rss(d.process.pid) - before < 400 * MiB
    assert_no_traceback(d)


# --- 4: batches ----------------------------------------------------------------------------------
def test_batch_length_is_limited(daemon: DaemonProcess) -> None:
    """Finding 4: batch size was not limited."""
    with RawClient(daemon.socket_path) as raw:
        reply = raw.request("batch", {"calls": [{"op": "ping", "args": {}}] * 1025})
        assert error_code(reply) == "RESOURCE_EXHAUSTED"
        assert "max_batch_length" in reply["error"]["message"]
        reply = raw.request("batch", {"calls": [{"op": "ping", "args": {}}] * 1024}, 2)
        assert reply["ok"] and len(reply["result"]) == 1024


def test_an_expensive_batch_does_not_stall_other_clients(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Finding 4: a batch of status calls ran on the event loop; other clients stalled 35 s."""
    config = mock_config()
    config["key_slots"] += [{"name": f"S{i}", "algorithm": "AES-256", "provider": 1} for i in range(300)]
    d = daemon_factory(config)
    done = threading.Event()
    latencies: list[float] = []

    def bystander() -> None:
        while not done.is_set():
            latencies.append(timed_ping(d.socket_path))

    with RawClient(d.socket_path, timeout=300) as raw:
        thread = threading.Thread(target=bystander)
        thread.start()
        try:
            started = time.monotonic()
            reply = raw.request("batch", {"calls": [{"op": "status", "args": {}}] * 1000})
            took = time.monotonic() - started
        finally:
            done.set()
            thread.join()
    assert reply["ok"] or error_code(reply) == "RESOURCE_EXHAUSTED"
    # On the event loop, the batch held every other client for its whole duration; off it,
    # a bystander waits for a scheduler slice at most (the bound is generous for a loaded
    # machine, and relative to how long the batch took).
    assert len(latencies) > 3
    assert max(latencies) < max(0.5, took / 2), f"a bystander waited {max(latencies):.2f} s of {took:.2f} s"
    assert_no_traceback(d)


# --- 5: permissions travel with the key material -------------------------------------------------
def test_copying_a_key_never_widens_who_may_export_it(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Finding 5: a uid refused export on slot A persisted A's key into a slot B without a
    permission mask and exported B. (Run as root: A's allow-list excludes it.)"""
    import cryptostack_core as cs
    from cryptostack_core import KeyOperationPermission as P

    config = mock_config()
    config["providers"].append({"name": "mock", "id": 2, "options": {"seed": "other"}})
    config["key_slots"] += [
        {
            "name": "Guarded",
            "algorithm": "AES-256",
            "provider": 1,
            "compatible_providers": [1, 2],
            "permissions": ["encrypt", "decrypt", "derive", "export"],
            "provision": "generate",
            "write_uids": [4242],
        },
        {"name": "Open", "algorithm": "AES-256", "provider": 1, "write_uids": [0]},
        {"name": "Elsewhere", "algorithm": "AES-256", "provider": 2, "write_uids": [0]},
        {
            "name": "Masked",
            "algorithm": "AES-256",
            "provider": 1,
            "write_uids": [0],
            "permissions": ["encrypt", "export"],
        },
    ]
    d = daemon_factory(config)
    denied = (cs.ErrorCode.ACCESS_DENIED, cs.ErrorCode.KEY_OPERATION_NOT_PERMITTED)
    with d.stack() as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        slot = {
            n: ctx.resolve_resource(n, cs.ResourceType.KEY_SLOT)
            for n in ("Guarded", "Open", "Elsewhere", "Masked")
        }

        def refused(action: Callable[[], Any]) -> cs.ErrorCode:
            with pytest.raises(cs.CryptoError) as err:
                action()
            assert err.value.code in denied, err.value
            return err.value.code

        assert refused(lambda: km.export_key(slot["Guarded"])) is cs.ErrorCode.ACCESS_DENIED
        guarded = km.load_key(slot["Guarded"])
        km.persist_key(slot["Open"], guarded)  # allowed: it is a copy, not an export
        refused(lambda: km.export_key(slot["Open"]))
        refused(lambda: km.export_key(km.load_key(slot["Open"])))
        km.persist_key(slot["Elsewhere"], guarded)  # moved to another provider
        assert km.get_key_slot_info(slot["Elsewhere"]).provider == 2
        refused(lambda: km.export_key(slot["Elsewhere"]))
        km.persist_key(slot["Elsewhere"], km.load_key(slot["Open"]))  # two hops
        refused(lambda: km.export_key(slot["Elsewhere"]))
        derived = km.derive_key(
            cs.DeriveKeyParams()
            .set_key(guarded)
            .set_info(b"x")
            .set_output("AES-256")
            .set_permissions(P.ENCRYPT | P.EXPORT)
        )
        refused(lambda: km.export_key(derived))
        km.persist_key(slot["Masked"], guarded)
        assert km.get_key_slot_info(slot["Masked"]).permissions == P.ENCRYPT | P.EXPORT
        refused(lambda: km.export_key(slot["Masked"]))
        # Narrowing: EXPORT never appears on the way.
        plain = km.generate_key(
            cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.DERIVE)
        )
        km.persist_key(slot["Open"], plain)
        assert not km.get_key_slot_info(slot["Open"]).permissions & P.EXPORT
        assert refused(lambda: km.export_key(slot["Open"])) is cs.ErrorCode.KEY_OPERATION_NOT_PERMITTED
        assert (
            refused(
                lambda: km.derive_key(
                    cs.DeriveKeyParams()
                    .set_key(plain)
                    .set_output("AES-256")
                    .set_permissions(P.ENCRYPT | P.EXPORT)
                )
            )
            is cs.ErrorCode.KEY_OPERATION_NOT_PERMITTED
        )
        # Not over-restricted: the client's own exportable key, persisted, exports again.
        mine = km.generate_key(
            cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.EXPORT)
        )
        km.persist_key(slot["Open"], mine)
        assert km.export_key(slot["Open"]) == km.export_key(mine)
    assert_no_traceback(d)


ATTACKER_EXPORT = r"""
import json, sys
import cryptostack_core as cs
from cryptostack_core import CryptoError
out = {}
stack = cs.create_crypto_stack(cs.CryptoStackConfig().set_connection_endpoint(sys.argv[1]))
ctx = stack.create_crypto_context()
km = ctx.create_key_management_context()
a = ctx.resolve_resource("TeamKey", cs.ResourceType.KEY_SLOT)
b = ctx.resolve_resource("MySlot", cs.ResourceType.KEY_SLOT)
try:
    out["direct"] = km.export_key(a).hex()
except CryptoError as exc:
    out["direct"] = exc.code.value
km.persist_key(b, km.load_key(a))
try:
    out["copied"] = km.export_key(b).hex()
except CryptoError as exc:
    out["copied"] = exc.code.value
print(json.dumps(out))
"""


def test_another_uid_cannot_export_a_key_by_copying_it(
    other_users: Any, public_dir: Path, mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Finding 5, as the attacker ran it: their own uid, a slot B they may write."""
    attacker = other_users[0]
    config = mock_config()
    config["key_slots"] += [
        {
            "name": "TeamKey",
            "algorithm": "AES-256",
            "provider": 1,
            "provision": "generate",
            "permissions": ["encrypt", "decrypt", "export"],
        },  # export: root only (default)
        {"name": "MySlot", "algorithm": "AES-256", "provider": 1, "write_uids": [attacker.uid]},
    ]
    d = public_daemon(daemon_factory, config, public_dir)
    run = attacker.run(ATTACKER_EXPORT, d.endpoint)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out == {"direct": "ACCESS_DENIED", "copied": "ACCESS_DENIED"}, out


# --- 7: a fair share of connections ---------------------------------------------------------------
ATTACKER_CONNECTIONS = r"""
import json, sys
from secutil import RawClient
held, refusal = [], None
for _ in range(int(sys.argv[2])):
    raw = RawClient(sys.argv[1], hello=False)
    try:
        raw.send({"hello": {"versions": [1]}})
    except OSError:  # refused at once: the answer is already waiting
        pass
    reply = raw.recv()
    if "hello" not in reply:
        refusal = reply["error"]["message"]
        break
    held.append(raw)
print(json.dumps({"held": len(held), "refusal": refusal}), flush=True)
sys.stdin.readline()  # hold them until the test is done
"""


def test_one_uid_cannot_take_every_connection(
    other_users: Any, public_dir: Path, mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Finding 7: 700 silent connections of one uid locked every other client out."""
    d = public_daemon(daemon_factory, mock_config(max_clients=100), public_dir)
    attacker = other_users[0].popen(ATTACKER_CONNECTIONS, str(d.socket_path), "120")
    try:
        assert attacker.stdout is not None and attacker.stdin is not None
        line = attacker.stdout.readline()
        assert line, attacker.stderr.read() if attacker.stderr else "no output"
        out = json.loads(line)
        assert out["held"] == 64, out
        assert out["refusal"] and "max_connections_per_uid" in out["refusal"]
        with d.stack() as other:  # another uid still gets in
            assert other.status()["clients"]
    finally:
        if attacker.stdin is not None:
            attacker.stdin.close()
        attacker.wait(30)


def test_half_sent_frames_and_idle_connections_time_out(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Finding 7: a frame that stopped half way kept its connection open (5/5 after 45 s)."""
    config = mock_config(frame_timeout=0.5, idle_timeout=1.0)
    config["providers"][0]["options"] = {"delays": {"generate_key": 2.5}}
    d = daemon_factory(config)
    with (
        RawClient(d.socket_path, timeout=30) as half,
        RawClient(d.socket_path, timeout=30) as idle,
        RawClient(d.socket_path, timeout=30) as busy,
    ):
        half.send_raw((100).to_bytes(4, "big") + b"\xa1" * 10)
        busy.send({"id": 7, "op": "key.generate", "args": {"algorithm": "AES-256"}})
        reply = half.recv()
        assert error_code(reply) == "PROTOCOL_ERROR" and "frame_timeout" in reply["error"]["message"]
        assert half.closed()
        reply = idle.recv()
        assert error_code(reply) == "RESOURCE_EXHAUSTED" and "idle_timeout" in reply["error"]["message"]
        assert idle.closed()
        # A connection waiting for its answer is not idle.
        assert busy.recv()["id"] == 7
        assert busy.request("ping", {}, 8)["result"] == "pong"
    assert_no_traceback(d)


# --- 8: bulkheads ----------------------------------------------------------------------------------
def test_a_hung_provider_delays_only_its_own_clients(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Finding 8: *.create and key operations ran on the first preferred provider's pool; a
    hung HSM stalled every other provider's clients."""
    import cryptostack_core as cs

    gate = Gate()  # provider 1's key generations hang here until the end of the test
    config = mock_config(worker_threads=2)
    config["providers"] = [
        {"name": "mock", "id": 1, "options": {"gates": {"generate_key": gate.path}}},
        {"name": "mock", "id": 2, "options": {"seed": "second"}},
    ]
    config["key_slots"] = [
        {
            "name": "FastSlot",
            "algorithm": "AES-256",
            "provider": 2,
            "compatible_providers": [2],
            "provision": "generate",
            "permissions": ["encrypt", "decrypt"],
        }
    ]
    d = daemon_factory(config)
    hung = [RawClient(d.socket_path) for _ in range(2)]
    try:
        for raw in hung:
            raw.send({"id": 1, "op": "key.generate", "args": {"algorithm": "AES-256", "provider": 1}})
        for _ in hung:  # both workers of provider 1 are now stuck
            assert gate.wait_arrival(30)
        started = time.monotonic()
        with d.stack(timeout=30) as stack:
            ctx = stack.create_crypto_context()
            slot = ctx.resolve_resource("FastSlot", cs.ResourceType.KEY_SLOT)
            enc = ctx.create_cipher_context(
                cs.CipherContextConfig()
                .set_algorithm("AES-256-CBC")
                .set_key(slot)
                .set_direction(cs.CipherDirection.ENCRYPT)
            )
            enc.init(bytes(16))
            assert len(enc.update(b"x" * 16) + enc.finalize()) == 32
            km = ctx.create_key_management_context()
            key = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256").set_provider(2))
            assert key.provider == 2  # type: ignore[attr-defined]
            status = stack.status()  # provider 1 shows as busy instead of holding it up
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, f"provider 2's client waited {elapsed:.1f} s for provider 1"
        states = {p["id"]: p for p in status["providers"]}
        assert states[2]["state"] == "ready"
        gate.open()
        for raw in hung:
            assert raw.recv()["ok"]
    finally:
        gate.close()
        for raw in hung:
            raw.close()
    assert_no_traceback(d)


# --- 10: protocol hygiene ---------------------------------------------------------------------------
def test_malformed_requests_are_answered_not_dropped(daemon: DaemonProcess) -> None:
    """Finding 10: a batch member whose op is a list or a map, or timeout_ms 10**400, dropped
    the connection with a traceback; hello accepted versions 1.0 and true."""
    with RawClient(daemon.socket_path) as raw:
        for n, op in enumerate(([1], {"a": 1}, None, 5)):
            reply = raw.request("batch", {"calls": [{"op": op, "args": {}}]}, 10 + n)
            assert error_code(reply) == "PROTOCOL_ERROR" and reply["id"] == 10 + n
        raw.send({"id": 20, "op": "ping", "args": {}, "timeout_ms": 10**400})
        reply = raw.recv()
        assert error_code(reply) == "PROTOCOL_ERROR" and "tag" in reply["error"]["message"]
        for n, timeout in enumerate(((1 << 64) - 1, 0, -5, 1.5, True)):
            reply = raw.request("ping", {}, 30 + n, timeout_ms=timeout)
            assert error_code(reply) == "PROTOCOL_ERROR" and reply["id"] == 30 + n
        assert raw.request("ping", {}, 40, timeout_ms=1000)["result"] == "pong"
    with RawClient(daemon.socket_path) as raw:  # malformed data is INVALID_ARGUMENT
        reply = raw.request("cert.import", {"data": _certificate_with_a_malformed_subject()}, 50)
        assert error_code(reply) == "INVALID_ARGUMENT" and "subject" in reply["error"]["message"]
    for versions in ([1.0], [True], ["1"]):
        raw = RawClient(daemon.socket_path, hello=False)
        raw.send({"hello": {"versions": versions}})
        reply = raw.recv()
        assert error_code(reply) == "PROTOCOL_ERROR", versions
        assert raw.closed()
    assert_no_traceback(daemon)


# --- 11: metadata --------------------------------------------------------------------------------------
OBSERVER = r"""
import json, sys
from secutil import RawClient
raw = RawClient(sys.argv[1])
status = raw.request("status", {}, 1)["result"]
slot = raw.request("resource.resolve", {"name": "RootOnly", "type": "KEY_SLOT"}, 2)["result"]
described = raw.request("resource.describe", {"id": slot}, 3)
print(json.dumps({"uids": sorted({c["uid"] for c in status["clients"]}),
                  "slots": [s["name"] for s in status["key_slots"]],
                  "provider_keys": sorted(status["providers"][0]),
                  "describe": described.get("error", {}).get("code", "OK")}))
"""


def test_status_and_describe_show_others_only_to_admins(
    other_users: Any, public_dir: Path, mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Finding 11: status showed every client's pid/uid and the providers' details (token
    label, serial) to everyone; resource.describe showed slots the caller may not use."""
    plain, auditor = other_users
    config = mock_config(admin_uids=[auditor.uid])
    config["key_slots"].append({"name": "RootOnly", "algorithm": "AES-256", "provider": 1, "use_uids": [0]})
    d = public_daemon(daemon_factory, config, public_dir)
    with d.stack() as root_client:
        root_client.ping()
        seen = {}
        for user in (plain, auditor):
            run = user.run(OBSERVER, str(d.socket_path))
            assert run.returncode == 0, run.stderr
            seen[user.name] = json.loads(run.stdout)
    mine = seen[plain.name]
    assert mine["uids"] == [plain.uid]
    assert "RootOnly" not in mine["slots"] and "PreDeployedSlot" in mine["slots"]
    assert mine["provider_keys"] == ["id", "name", "reason", "state"]
    assert mine["describe"] == "ACCESS_DENIED"
    admin = seen[auditor.name]
    assert 0 in admin["uids"] and auditor.uid in admin["uids"]
    assert "RootOnly" in admin["slots"] and "kind" in admin["provider_keys"]
    assert admin["describe"] == "OK"


def test_the_client_splits_a_long_backlog_of_releases(inproc_stack: Any) -> None:
    """Finding 4, client side: releases of collected guards never make a batch too long."""
    import gc

    import cryptostack_core as cs

    km = inproc_stack.create_crypto_context().create_key_management_context()
    keys = [km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-128")) for _ in range(1100)]
    assert inproc_stack.status()["clients"][0]["guards"] >= 1100
    del keys
    gc.collect()
    inproc_stack.ping()  # 1100 queued releases ride along, in several batches
    assert inproc_stack.status()["clients"][0]["guards"] == 0
