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


def public_daemon(factory: Callable[..., DaemonProcess], config: dict[str, Any],
                  public_dir: Path) -> DaemonProcess:
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
        other_users: Any, public_dir: Path, mock_config: MockConfig,
        daemon_factory: Callable[..., DaemonProcess]) -> None:
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
        reply = attach_and_send(raw, fd, MiB, {"id": 2, "op": "hash.single_shot",
                                                "args": {"ctx": ctx, "data": {"shm": [0, MiB]}}})
        if reply.get("ok"):  # the old daemon mapped it: shrink it under the daemon's feet
            os.ftruncate(fd, 0)
            raw.send({"id": 3, "op": "hash.single_shot",
                      "args": {"ctx": ctx, "data": {"shm": [0, MiB]}}})
            try:
                raw.recv()
            except (ConnectionError, OSError):
                pass
        assert daemon.process.poll() is None, "the daemon died"
        assert error_code(reply) == "INVALID_ARGUMENT"
        assert "seal" in reply["error"]["message"]
        os.close(fd)
        # Partially sealed (no F_SEAL_WRITE): still refused.
        fd = os.memfd_create("cryptostack-shm", os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, 8192)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        reply = attach_and_send(raw, fd, 8192, {"id": 4, "op": "hash.single_shot",
                                                 "args": {"ctx": ctx, "data": {"shm": [0, 8]}}})
        assert error_code(reply) == "INVALID_ARGUMENT" and "F_SEAL_WRITE" in reply["error"]["message"]
        os.close(fd)
        # A sealed memfd is accepted, and can no longer shrink.
        data = os.urandom(MiB)
        fd = sealed_memfd(data)
        reply = attach_and_send(raw, fd, MiB, {"id": 5, "op": "hash.single_shot",
                                                "args": {"ctx": ctx, "data": {"shm": [0, MiB]}}})
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

        h = stack.create_crypto_context().create_hash_context(
            cs.HashContextConfig().set_algorithm("SHA-256"))
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


@pytest.mark.parametrize(("name", "body", "needle"), [
    ("deep nesting", b"\xa1\x61a" * 40 + b"\x00", "depth"),
    ("a tag (bignum)", cbor2.dumps({"id": 1, "op": "ping", "args": {}, "timeout_ms": 10**400}),
     "tag"),
    ("a tag (regex)", b"\xa3\x62id\x01\x62op\x64ping\x64args\xd8\x23\x63a+b", "tag"),
    ("indefinite length", b"\xbf\x62id\x01\x62op\x64ping\xff", "indefinite"),
    ("a byte-string key", b"\xa3\x62id\x01\x62op\x64ping\x41k\x00", "key"),
    ("a duplicate key", b"\xa3\x62id\x01\x62op\x64ping\x62op\x64ping", "duplicate"),
    ("too many keys", cbor2.dumps({"id": 1, "op": "ping", "args": {f"k{i}": 0 for i in range(2000)}}),
     "keys"),
    ("a long array", cbor2.dumps({"id": 1, "op": "ping", "args": {"a": [0] * 20000}}), "array"),
    ("undefined arguments", b"\xa3\x62id\x01\x62op\x64ping\x64args\xf7", "args"),
    ("trailing bytes", cbor2.dumps({"id": 1, "op": "ping"}) + b"\x00", "trailing"),
    ("truncated", cbor2.dumps({"id": 1, "op": "ping", "args": {"data": b"x" * 100}})[:-5],
     "truncated"),
])
def test_frames_outside_the_documented_cbor_subset_are_refused(
        daemon: DaemonProcess, name: str, body: bytes, needle: str) -> None:
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
        (nested(sub.MAX_DEPTH), True), (nested(sub.MAX_DEPTH + 1), False),
        ({i: 0 for i in range(sub.MAX_MAP_KEYS)}, True),
        ({i: 0 for i in range(sub.MAX_MAP_KEYS + 1)}, False),
        ([0] * sub.MAX_ARRAY, True), ([0] * (sub.MAX_ARRAY + 1), False),
        ({(1 << 32) - 1: 0, -(1 << 32): 0}, True), ({1 << 32: 0}, False),
        ({b"k": 0}, False), ({1.5: 0}, False), ({None: 0}, False),
        ([[0] * 16000] * 4, True), ([[0] * 16000] * 5, False),  # items per frame
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
# --- 11: metadata ------------------------------------------------------------------------------
def test_audit_log_is_created_private(
        mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess],
        tmp_path: Path) -> None:
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
        mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess], tmp_path: Path,
        other_users: Any) -> None:
    """Finding 11: ``audit_log_group`` makes the log 0640 to that group."""
    audit = tmp_path / "audit.jsonl"
    reader = other_users[1]
    daemon_factory(mock_config(audit_log=str(audit), audit_log_group=reader.gid))
    info = audit.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_gid == reader.gid
